"""Records the dataset adapters produce, and checks they share."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medaug.errors import DatasetError


@dataclass(frozen=True)
class CaseRef:
    """A case found while listing a dataset: ids and the files it will be read from."""

    case_id: str
    patient_id: str
    files: dict[str, Path]
    group: str = ""  # BUSI class folder, official split (Train/Test), ...
    extra: dict = field(default_factory=dict, compare=False)


@dataclass
class SegmentationCase:
    """A case as a stack of 2D slices in display orientation.

    ``image`` and ``mask`` are (slices, rows, cols); a 2D image has one slice. Rows run
    anterior to posterior and columns patient-right to patient-left (radiological view).
    ``spacing`` is (slice, row, col) in mm.
    """

    ref: CaseRef
    image: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]


def case_id_from(name: str) -> str:
    """File-system and nnU-Net safe id: 'benign (12)' -> 'benign_12'."""
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_")


def natural_key(text: str) -> list:
    """Sort key that orders 'case 2' before 'case 10'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


# What copies, archives and file browsers leave beside the data: hidden files (.DS_Store,
# AppleDouble ._name forks, unfinished writes), macOS archive folders, Windows thumbnails.
OS_CLUTTER = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})


def is_clutter(name: str) -> bool:
    """Whether a file or folder name is OS clutter, ignored by every reader and manifest."""
    return name.startswith(".") or name in OS_CLUTTER


def folder_entries(folder: Path) -> list[Path]:
    """The entries of ``folder`` in natural order, OS clutter left out."""
    return sorted((p for p in folder.iterdir() if not is_clutter(p.name)), key=lambda p: natural_key(p.name))


def check_unique_ids(refs: Iterable[CaseRef]) -> None:
    seen: dict[str, CaseRef] = {}
    for ref in refs:
        if ref.case_id in seen:
            first = next(iter(seen[ref.case_id].files.values()))
            second = next(iter(ref.files.values()))
            raise DatasetError(second, f"duplicate case id '{ref.case_id}' (also used by {first})")
        seen[ref.case_id] = ref


def check_label_values(path: Path, values: np.ndarray, allowed: Iterable[int], what: str = "label values") -> None:
    allowed = set(int(v) for v in allowed)
    if values.size and not np.all(np.equal(np.mod(values, 1), 0)):
        raise DatasetError(path, f"{what} must be integers, found {values[np.mod(values, 1) != 0][:5].tolist()}")
    outside = sorted(set(np.unique(values).astype(np.int64).tolist()) - allowed)
    if outside:
        raise DatasetError(path, f"{what} {outside} outside the declared set {sorted(allowed)}")


def check_finite(path: Path, values: np.ndarray, what: str = "values") -> None:
    """Reject NaN/inf: percentile clipping would turn the whole slice into a constant
    while its mask stays, a silent wrong training pair."""
    if not np.issubdtype(values.dtype, np.inexact):
        return  # integer images cannot hold them
    bad = values.size - int(np.count_nonzero(np.isfinite(values)))
    if bad:
        raise DatasetError(path, f"{bad} non-finite (NaN or inf) {what} out of {values.size}")


def check_same_shape(path: Path, shape: tuple, expected: tuple, what: str) -> None:
    if tuple(shape) != tuple(expected):
        raise DatasetError(path, f"shape mismatch: {what} has shape {tuple(shape)}, image has {tuple(expected)}")


def apply_label_merge(labels: np.ndarray, merge: dict[int, int]) -> np.ndarray:
    """Map raw label values to merged ones through a lookup table (unlisted values kept)."""
    if not merge:
        return labels
    table = np.arange(max(int(labels.max(initial=0)), *merge) + 1)
    for raw, merged in merge.items():
        table[raw] = merged
    return table[labels]


def require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DatasetError(path, f"{what} not found (expected a folder)")
