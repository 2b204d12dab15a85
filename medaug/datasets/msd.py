"""Medical Segmentation Decathlon tasks (Task09 Spleen, Task05 Prostate) as distributed.

``<root>/dataset.json`` lists ``training`` pairs ``{"image": "./imagesTr/x.nii.gz",
"label": "./labelsTr/x.nii.gz"}`` in the order the official code's folds use (spec §1.2); the
unlabelled ``test`` volumes are not used. Images are reoriented to RAS and cut into axial
slices; a 4D image (prostate: T2 + ADC) keeps the configured channel only.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from medaug.datasets.base import (
    CaseRef,
    SegmentationCase,
    apply_label_merge,
    check_label_values,
    check_same_shape,
    check_unique_ids,
    require_dir,
)
from medaug.errors import DatasetError
from medaug.io import read_json


def _case_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    raise DatasetError(path, "expected a .nii or .nii.gz file")


def _load_nifti(path: Path):
    import nibabel as nib

    if not path.is_file():
        raise DatasetError(path, "file not found")
    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise DatasetError(path, f"unreadable or corrupt NIfTI ({exc})") from None
    return image, data


def to_display_slices(volume: np.ndarray) -> np.ndarray:
    """RAS (x, y, z) volume -> (z, rows, cols): anterior at the top, patient right on the left."""
    return np.ascontiguousarray(np.flip(np.transpose(volume, (2, 1, 0)), axis=(1, 2)))


def from_display_slices(slices: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_display_slices`."""
    return np.ascontiguousarray(np.transpose(np.flip(slices, axis=(1, 2)), (2, 1, 0)))


class MsdDataset:
    def __init__(self, root: str | Path, channel: str | int | None = None, label_merge: dict | None = None, **_ignored):
        self.root = Path(root)
        self.channel = channel
        self.label_merge = {int(k): int(v) for k, v in (label_merge or {}).items()}
        self._meta: dict | None = None

    @property
    def meta(self) -> dict:
        if self._meta is None:
            require_dir(self.root, "MSD task folder")
            path = self.root / "dataset.json"
            meta = read_json(path)
            if not isinstance(meta, dict):
                raise DatasetError(path, "expected a JSON object")
            for key in ("training", "labels"):
                if key not in meta:
                    raise DatasetError(path, f"missing key '{key}'")
            if not isinstance(meta["training"], list) or not meta["training"]:
                raise DatasetError(path, "'training' must be a non-empty list of {image, label} entries")
            self._meta = meta
        return self._meta

    @property
    def raw_labels(self) -> dict[int, str]:
        try:
            return {int(k): str(v) for k, v in self.meta["labels"].items()}
        except (AttributeError, ValueError):
            raise DatasetError(self.root / "dataset.json", "'labels' must map integer values to names") from None

    @property
    def labels(self) -> dict[int, str]:
        """Label values after merging, named after their raw labels ('PZ+TZ')."""
        names: dict[int, list[str]] = {}
        for raw, name in sorted(self.raw_labels.items()):
            names.setdefault(self.label_merge.get(raw, raw), []).append(name)
        return {value: "+".join(parts) for value, parts in sorted(names.items())}

    def _channel_index(self, n_channels: int, path: Path) -> int:
        modalities = self.meta.get("modality") or self.meta.get("channel_names") or {}
        if isinstance(self.channel, int) or (isinstance(self.channel, str) and self.channel.isdigit()):
            index = int(self.channel)
        else:
            matches = [int(k) for k, v in modalities.items() if str(v).lower() == str(self.channel).lower()]
            if not matches:
                raise DatasetError(
                    self.root / "dataset.json",
                    f"channel '{self.channel}' is not among the modalities {dict(modalities)}",
                )
            index = matches[0]
        if not 0 <= index < n_channels:
            raise DatasetError(path, f"channel {index} requested, but the image has {n_channels} channels")
        return index

    def cases(self) -> list[CaseRef]:
        json_path = self.root / "dataset.json"
        refs = []
        for number, entry in enumerate(self.meta["training"]):
            if not isinstance(entry, dict) or not {"image", "label"} <= entry.keys():
                raise DatasetError(json_path, f"training entry {number} must have 'image' and 'label'")
            image_path = Path(os.path.normpath(self.root / entry["image"]))
            label_path = Path(os.path.normpath(self.root / entry["label"]))
            if not image_path.is_file():
                raise DatasetError(image_path, f"image listed in {json_path.name} not found")
            if not label_path.is_file():
                raise DatasetError(label_path, f"missing label for {image_path.name}")
            case_id = _case_name(image_path)
            refs.append(CaseRef(case_id, case_id, {"image": image_path, "label": label_path}))
        check_unique_ids(refs)
        return refs

    def load(self, ref: CaseRef) -> SegmentationCase:
        import nibabel as nib

        image_path, label_path = ref.files["image"], ref.files["label"]
        image, data = _load_nifti(image_path)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if self.channel is None:
            if data.ndim != 3:
                raise DatasetError(
                    image_path,
                    f"{data.ndim}D image where 3D is expected (shape {data.shape}); "
                    "set the dataset's `channel` to pick one channel of a 4D image",
                )
            image3d = nib.Nifti1Image(data, image.affine)
        else:
            if data.ndim != 4:
                raise DatasetError(
                    image_path, f"expected a 4D image to take channel '{self.channel}' from, got shape {data.shape}"
                )
            index = self._channel_index(data.shape[3], image_path)
            image3d = nib.Nifti1Image(data[..., index], image.affine)
        label, label_data = _load_nifti(label_path)
        if label_data.ndim != 3:
            raise DatasetError(label_path, f"{label_data.ndim}D label where 3D is expected (shape {label_data.shape})")
        check_same_shape(label_path, label_data.shape, image3d.shape, "label")
        check_label_values(label_path, label_data, self.raw_labels)
        image3d = nib.as_closest_canonical(image3d)
        label3d = nib.as_closest_canonical(nib.Nifti1Image(label_data.astype(np.int16), label.affine))
        if nib.aff2axcodes(image3d.affine) != nib.aff2axcodes(label3d.affine):
            raise DatasetError(label_path, "label orientation differs from the image's")
        mask = apply_label_merge(np.asarray(label3d.dataobj).astype(np.int64), self.label_merge)
        zooms = image3d.header.get_zooms()[:3]
        return SegmentationCase(
            ref,
            to_display_slices(np.asarray(image3d.dataobj, dtype=np.float32)),
            to_display_slices(mask.astype(np.uint8)),
            (float(zooms[2]), float(zooms[1]), float(zooms[0])),
        )
