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
    check_finite,
    check_label_values,
    check_same_shape,
    check_unique_ids,
    folder_entries,
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


# How far (px) a centroid may lie outside its instance's bounding box, on top of half the
# box's size: MATLAB's 1-based centroids and nuclei partly overdrawn by a neighbour move it
# a little, a transposed inst_map or (y, x) centroids by the nucleus' distance from the diagonal.
CENTROID_MARGIN = 2.0


# How much darker than the rest a tile's nuclei must look under the transposed label map,
# beyond twice what they look under the map as given, for the map to count as transposed
# (grey levels of 0..255; nuclei are 50-100 darker in H&E, about 0-15 after transposing).
TRANSPOSED_MARGIN = 5.0


def check_labels_fit_image(path: Path, image: np.ndarray, inst_map: np.ndarray) -> None:
    """Nuclei are the dark, haematoxylin-stained objects of an H&E tile. Label maps that are
    transposed against their image, all alike (as a MATLAB v7.3 file read with h5py and
    re-saved is), pass every label-vs-label check of a square tile; against the image their
    nuclei fall on random tissue, and the transposed map fits it far better."""
    nuclei = inst_map > 0
    if image.shape[0] != image.shape[1] or not nuclei.any() or nuclei.all():
        return

    def contrast(mask: np.ndarray) -> float:
        grey = image.mean(axis=2)
        return float(grey[~mask].mean() - grey[mask].mean())

    as_given, transposed = contrast(nuclei), contrast(nuclei.T)
    if transposed > 2 * max(as_given, 0.0) + TRANSPOSED_MARGIN:
        raise DatasetError(
            path,
            f"label maps look transposed against the image: nuclei are {as_given:.0f} grey levels darker "
            f"than the rest as stored, {transposed:.0f} transposed (a v7.3 .mat read with h5py comes out "
            "transposed; save inst_map, type_map and inst_centroid in the image's row/column order)",
        )


def check_centroids(path: Path, inst_map: np.ndarray, centroid: np.ndarray) -> None:
    """Each ``inst_centroid`` (x, y) must lie at its instance's pixels in ``inst_map``."""
    from scipy import ndimage

    for inst_id, box in enumerate(ndimage.find_objects(inst_map), start=1):
        if box is None:
            continue  # an id without pixels has nothing to compare with
        rows, cols = box
        x, y = centroid[inst_id - 1]
        slack_x = CENTROID_MARGIN + (cols.stop - cols.start) / 2
        slack_y = CENTROID_MARGIN + (rows.stop - rows.start) / 2
        if not (
            cols.start - slack_x <= x <= cols.stop - 1 + slack_x
            and rows.start - slack_y <= y <= rows.stop - 1 + slack_y
        ):
            raise DatasetError(
                path,
                f"instance {inst_id}: inst_centroid (x={x:.1f}, y={y:.1f}) lies away from its inst_map pixels "
                f"(rows {rows.start}-{rows.stop - 1}, cols {cols.start}-{cols.stop - 1}); "
                "inst_map transposed, or centroids stored as (y, x)?",
            )


def check_types_agree(path: Path, inst_map: np.ndarray, type_map: np.ndarray, inst_type: np.ndarray) -> None:
    """``type_map`` must give each instance's pixels its ``inst_type`` (by majority: a
    nucleus partly overdrawn by a neighbour keeps a few pixels of the other type)."""
    n_inst = inst_type.size
    if n_inst and not type_map.any():
        raise DatasetError(path, f"type_map is all zero although inst_type gives types to {n_inst} instances")
    n_types = int(max(type_map.max(initial=0), inst_type.max(initial=0))) + 1
    counts = np.bincount((inst_map * n_types + type_map).ravel(), minlength=(n_inst + 1) * n_types)
    counts = counts.reshape(n_inst + 1, n_types)[1:]
    own = counts[np.arange(n_inst), inst_type]
    wrong = np.flatnonzero((counts.sum(axis=1) > 0) & (own < counts.max(axis=1)))
    if wrong.size:
        index = int(wrong[0])
        raise DatasetError(
            path,
            f"instance {index + 1}: inst_type is {inst_type[index]} but most of its pixels in type_map are "
            f"{int(counts[index].argmax())} ({wrong.size} instance(s) disagree)",
        )


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
            images = [
                p for p in folder_entries(images_dir) if p.is_file() and p.suffix.lower() in self.spec["extensions"]
            ]
            if not images:
                wanted = "/".join(self.spec["extensions"])
                raise DatasetError(images_dir, f"no {wanted} images")
            labels = {p.stem: p for p in folder_entries(labels_dir) if p.suffix.lower() == ".mat"}
            for stem in sorted(labels.keys() - {p.stem for p in images}):
                raise DatasetError(labels[stem], "label without a matching image")
            for path in images:
                if path.stem not in labels:
                    raise DatasetError(path, f"missing label (expected {labels_dir / (path.stem + '.mat')})")
                refs.append(CaseRef(path.stem, path.stem, {"image": path, "label": labels[path.stem]}, group=split))
        check_unique_ids(refs)  # a tile in both Train and Test would leak
        return refs

    def load(self, ref: CaseRef) -> NucleiTile:
        image_path, label_path = ref.files["image"], ref.files["label"]
        image = read_image(image_path)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise DatasetError(image_path, f"expected an RGB(A) tile, got array shape {image.shape}")
        image = np.ascontiguousarray(image[..., :3])
        check_finite(image_path, image, "pixel values")
        image = np.clip(np.round(image), 0, 255).astype(np.uint8) if image.dtype != np.uint8 else image
        inst_map, type_map, inst_type, centroid = self._read_labels(label_path, image.shape[:2])
        check_labels_fit_image(label_path, image, inst_map)
        return NucleiTile(
            ref,
            image,
            inst_map.astype(np.int32),
            apply_label_merge(type_map, self.merge).astype(np.uint8),
            apply_label_merge(inst_type, self.merge).astype(np.uint8),
            centroid,
        )

    def _read_labels(self, label_path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
        """inst_map, raw type_map, raw inst_type and inst_centroid, checked against each other."""
        import scipy.io

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
        check_same_shape(label_path, inst_map.shape, shape, "inst_map")
        check_same_shape(label_path, type_map.shape, shape, "type_map")
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
        check_finite(label_path, centroid, "inst_centroid values")
        inst_map, type_map, inst_type = inst_map.astype(np.int64), type_map.astype(np.int64), inst_type.astype(np.int64)
        centroid = centroid.reshape(-1, 2)
        check_centroids(label_path, inst_map, centroid)
        check_types_agree(label_path, inst_map, type_map, inst_type)
        return inst_map, type_map, inst_type, centroid
