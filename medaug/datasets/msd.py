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
    check_finite,
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


# How far a label's header may differ from its image's, as fractions of the image's voxel
# size. Voxels are paired by index, never resampled, so these only have to tell float
# rounding (float32 headers agree to ~1e-7 of a voxel) from a label made on another grid
# (a different spacing, or shifted by whole voxels). The voxel step vectors (spacing and
# direction) get the tighter bound because an error in them adds up along the axis.
STEP_TOLERANCE = 1e-3
ORIGIN_TOLERANCE = 1e-2


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def check_same_grid(label_path: Path, label_affine: np.ndarray, image_affine: np.ndarray) -> None:
    """The label must share its image's voxel grid as stored, before any reorientation.

    Reorienting each file by its own header would silently mirror or transpose a mask
    whose header disagrees with its image's, and both would then look "canonical".
    """
    import nibabel as nib

    image_codes, label_codes = nib.aff2axcodes(image_affine), nib.aff2axcodes(label_affine)
    if image_codes != label_codes:
        raise DatasetError(
            label_path,
            f"label orientation {''.join(label_codes)} differs from the image's {''.join(image_codes)}; "
            "an MSD label shares its image's voxel grid, so one of the two headers is wrong "
            "(reoriented, the mask would come out mirrored or transposed)",
        )
    voxel = np.linalg.norm(image_affine[:3, :3], axis=0)
    label_voxel = np.linalg.norm(label_affine[:3, :3], axis=0)
    if not np.allclose(label_voxel, voxel, rtol=0, atol=STEP_TOLERANCE * voxel):
        raise DatasetError(
            label_path, f"label voxel size {_fmt(label_voxel)} mm differs from the image's {_fmt(voxel)} mm"
        )
    # Columns are the voxel steps in mm; the tolerance of each scales with its voxel size.
    if not np.allclose(label_affine[:3, :3], image_affine[:3, :3], rtol=0, atol=STEP_TOLERANCE * voxel):
        raise DatasetError(
            label_path, "label axes are rotated relative to the image's (the affines' directions differ)"
        )
    shift = float(np.linalg.norm(label_affine[:3, 3] - image_affine[:3, 3]))
    if shift > ORIGIN_TOLERANCE * voxel.min():
        raise DatasetError(
            label_path,
            f"label origin {_fmt(label_affine[:3, 3])} mm is {shift:.3g} mm from the image's "
            f"{_fmt(image_affine[:3, 3])} (tolerance {ORIGIN_TOLERANCE * voxel.min():.3g} mm)",
        )


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

    def _entry_path(self, json_path: Path, number: int, entry: dict, key: str) -> Path:
        """A dataset.json path, which must stay inside the task folder: one that leaves it
        would read another task's (or any) file as this case, and breaks when the folder moves."""
        value = entry[key]
        if not isinstance(value, str) or not value:
            raise DatasetError(json_path, f"training entry {number}: '{key}' must be a path, got {value!r}")
        path = Path(os.path.normpath(self.root / value))
        # Lexically (abspath, not resolve): a task folder made of symlinks is fine.
        inside = Path(os.path.abspath(path)).is_relative_to(os.path.abspath(self.root))
        if Path(value).is_absolute() or not inside:
            raise DatasetError(
                json_path,
                f"training entry {number}: {key} '{value}' points outside the dataset folder "
                "(expected a relative path such as './imagesTr/x.nii.gz')",
            )
        return path

    def cases(self) -> list[CaseRef]:
        json_path = self.root / "dataset.json"
        refs = []
        for number, entry in enumerate(self.meta["training"]):
            if not isinstance(entry, dict) or not {"image", "label"} <= entry.keys():
                raise DatasetError(json_path, f"training entry {number} must have 'image' and 'label'")
            image_path = self._entry_path(json_path, number, entry, "image")
            label_path = self._entry_path(json_path, number, entry, "label")
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
        check_finite(image_path, np.asarray(image3d.dataobj), "voxels")
        label, label_data = _load_nifti(label_path)
        if label_data.ndim != 3:
            raise DatasetError(label_path, f"{label_data.ndim}D label where 3D is expected (shape {label_data.shape})")
        check_same_shape(label_path, label_data.shape, image3d.shape, "label")
        check_label_values(label_path, label_data, self.raw_labels)
        check_same_grid(label_path, label.affine, image.affine)
        image3d = nib.as_closest_canonical(image3d)
        label3d = nib.as_closest_canonical(nib.Nifti1Image(label_data.astype(np.int16), label.affine))
        mask = apply_label_merge(np.asarray(label3d.dataobj).astype(np.int64), self.label_merge)
        zooms = image3d.header.get_zooms()[:3]
        return SegmentationCase(
            ref,
            to_display_slices(np.asarray(image3d.dataobj, dtype=np.float32)),
            to_display_slices(mask.astype(np.uint8)),
            (float(zooms[2]), float(zooms[1]), float(zooms[0])),
        )
