"""CoNSeP and GLySAC nuclei tiles as distributed (HoVer-Net ``.mat`` labels).

``<root>/{Train,Test}/Images/<tile>.png|.tif`` and ``<root>/{Train,Test}/Labels/<tile>.mat``
with ``inst_map``, ``type_map``, ``inst_type`` and ``inst_centroid``. Raw types are merged
as DiffMix does (spec §2.2): CoNSeP 7 -> 4, GLySAC 10 -> 3; class 1 is the rare
"other/miscellaneous" class in both.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medaug.datasets.base import (
    CaseRef,
    apply_label_merge,
    check_label_values,
    check_same_shape,
    check_unique_ids,
    natural_key,
    require_dir,
)
from medaug.errors import DatasetError
from medaug.io import read_image

SPLITS = ("Train", "Test")
LABEL_KEYS = ("inst_map", "type_map", "inst_type", "inst_centroid")

NUCLEI_FORMATS = {
    "consep": {
        "extensions": (".png",),
        "raw_types": range(1, 8),
        "merge": {3: 3, 4: 3, 5: 4, 6: 4, 7: 4},
        "labels": {0: "background", 1: "other", 2: "inflammatory", 3: "epithelial", 4: "spindle"},
    },
    "glysac": {
        "extensions": (".tif", ".tiff"),
        "raw_types": range(1, 11),
        "merge": {1: 1, 2: 1, 9: 1, 10: 1, 4: 2, 5: 2, 6: 2, 7: 2, 3: 3, 8: 3},
        "labels": {0: "background", 1: "other", 2: "epithelial", 3: "lymphocyte"},
    },
}


@dataclass
class NucleiTile:
    ref: CaseRef
    image: np.ndarray  # H×W×3 uint8
    inst_map: np.ndarray  # H×W int32, 0 background, 1..N
    type_map: np.ndarray  # H×W uint8, merged types
    inst_type: np.ndarray  # (N,) merged type per instance
    inst_centroid: np.ndarray  # (N, 2) x, y


class NucleiDataset:
    def __init__(self, root: str | Path, format: str, label_merge: dict | None = None, **_ignored):
        self.root = Path(root)
        self.spec = NUCLEI_FORMATS[format]
        merge = {int(k): int(v) for k, v in (label_merge or {}).items()}
        self.merge = merge or self.spec["merge"]
        if label_merge:
            values = sorted({merge.get(t, t) for t in self.spec["raw_types"]})
            self.labels = {0: "background", **{v: f"type_{v}" for v in values}}
        else:
            self.labels = self.spec["labels"]

    def cases(self) -> list[CaseRef]:
        require_dir(self.root, "nuclei dataset folder")
        refs = []
        for split in SPLITS:
            images_dir, labels_dir = self.root / split / "Images", self.root / split / "Labels"
            require_dir(images_dir, f"{split}/Images")
            require_dir(labels_dir, f"{split}/Labels")
            images = sorted(
                (p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in self.spec["extensions"]),
                key=lambda p: natural_key(p.name),
            )
            if not images:
                wanted = "/".join(self.spec["extensions"])
                raise DatasetError(images_dir, f"no {wanted} images")
            labels = {p.stem: p for p in labels_dir.iterdir() if p.suffix.lower() == ".mat"}
            for stem in sorted(labels.keys() - {p.stem for p in images}):
                raise DatasetError(labels[stem], "label without a matching image")
            for path in images:
                if path.stem not in labels:
                    raise DatasetError(path, f"missing label (expected {labels_dir / (path.stem + '.mat')})")
                refs.append(CaseRef(path.stem, path.stem, {"image": path, "label": labels[path.stem]}, group=split))
        check_unique_ids(refs)  # a tile in both Train and Test would leak
        return refs

    def load(self, ref: CaseRef) -> NucleiTile:
        import scipy.io

        image_path, label_path = ref.files["image"], ref.files["label"]
        image = read_image(image_path)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise DatasetError(image_path, f"expected an RGB(A) tile, got array shape {image.shape}")
        image = np.ascontiguousarray(image[..., :3])
        try:
            mat = scipy.io.loadmat(label_path)
        except (OSError, ValueError, TypeError, NotImplementedError, zlib.error) as exc:
            raise DatasetError(label_path, f"unreadable or corrupt .mat ({exc})") from None
        for key in LABEL_KEYS:
            if key not in mat:
                raise DatasetError(
                    label_path, f"missing key '{key}' (has {sorted(k for k in mat if not k.startswith('__'))})"
                )
        inst_map, type_map = mat["inst_map"], mat["type_map"]
        check_same_shape(label_path, inst_map.shape, image.shape[:2], "inst_map")
        check_same_shape(label_path, type_map.shape, image.shape[:2], "type_map")
        check_label_values(label_path, inst_map, range(0, int(inst_map.max(initial=0)) + 1), what="inst_map ids")
        inst_type = np.asarray(mat["inst_type"]).reshape(-1)
        n_inst = int(inst_map.max(initial=0))
        if inst_type.size != n_inst:
            raise DatasetError(
                label_path, f"inst_type has {inst_type.size} entries but inst_map has {n_inst} instances"
            )
        raw_types = list(self.spec["raw_types"])
        check_label_values(label_path, inst_type, raw_types, what="inst_type values")
        check_label_values(label_path, type_map, [0, *raw_types], what="type_map values")
        centroid = np.asarray(mat["inst_centroid"], dtype=np.float64)
        if n_inst and centroid.shape != (n_inst, 2):
            raise DatasetError(label_path, f"inst_centroid has shape {centroid.shape}, expected ({n_inst}, 2)")
        return NucleiTile(
            ref,
            image,
            inst_map.astype(np.int32),
            apply_label_merge(type_map.astype(np.int64), self.merge).astype(np.uint8),
            apply_label_merge(inst_type.astype(np.int64), self.merge).astype(np.uint8),
            centroid.reshape(-1, 2),
        )
