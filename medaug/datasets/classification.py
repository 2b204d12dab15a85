"""Image classification sources: D-Cube's class tree, and BUSI read by class folder.

D-Cube reads ``<root>/{Train,Test}/<class>/*.png`` as grey images, with class indices in
natural-sorted folder order; the same order is used here. Images deeper than 8 bits are
scaled from their type's range to 0..255, as an 8-bit export of them would be.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medaug.datasets.base import CaseRef, case_id_from, check_finite, check_unique_ids, natural_key, require_dir
from medaug.datasets.busi import BusiDataset
from medaug.errors import DatasetError
from medaug.io import read_image, to_gray

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SPLITS = ("Train", "Test")


def to_8bit_range(image: np.ndarray) -> np.ndarray:
    """Integer pixels mapped from their dtype's full range to 0..255 (uint16: x / 65535 * 255).

    Later steps keep 0..255, so a 16-bit image left as is would be clipped to white.
    Float images carry no range of their own and are taken as 0..255 already.
    """
    if image.dtype == np.uint8 or not np.issubdtype(image.dtype, np.integer):
        return image
    info = np.iinfo(image.dtype)
    return (image.astype(np.float64) - info.min) * (255.0 / (info.max - info.min))


class ClassTreeDataset:
    has_official_test = True

    def __init__(self, root: str | Path, classes: list[str] | None = None, **_ignored):
        self.root = Path(root)
        self.classes = classes

    def class_names(self) -> list[str]:
        require_dir(self.root / "Train", "Train folder")
        found = sorted((p.name for p in (self.root / "Train").iterdir() if p.is_dir()), key=natural_key)
        names = list(self.classes) if self.classes is not None else found
        if not names:
            raise DatasetError(self.root / "Train", "no class folders")
        return names

    def check_test_classes(self, names: list[str]) -> None:
        """A class folder only in Test would be dropped silently (classes come from Train)."""
        test = self.root / "Test"
        if self.classes is not None or not test.is_dir():
            return  # configured classes are a deliberate choice; a missing Test is reported below
        for folder in sorted((p for p in test.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)):
            if folder.name not in names:
                raise DatasetError(
                    folder, f"class folder in Test but not in Train (expected {self.root / 'Train' / folder.name})"
                )

    def cases(self) -> list[CaseRef]:
        names = self.class_names()
        self.check_test_classes(names)
        refs = []
        for split in SPLITS:
            for class_name in names:
                folder = self.root / split / class_name
                require_dir(folder, f"class folder '{class_name}' of {split}")
                files = sorted(
                    (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                    key=lambda p: natural_key(p.name),
                )
                if not files:
                    raise DatasetError(folder, "class folder contains no images")
                for path in files:
                    case_id = case_id_from(f"{split}_{class_name}_{path.stem}")
                    refs.append(CaseRef(case_id, case_id, {"image": path}, group=class_name, extra={"split": split}))
        check_unique_ids(refs)
        return refs

    def load_image(self, ref: CaseRef) -> np.ndarray:
        path = ref.files["image"]
        grey = to_gray(to_8bit_range(read_image(path)), path)
        check_finite(path, grey, "pixels")
        return grey


class BusiClassification(BusiDataset):
    """BUSI's three class folders as a classification source (no official test split)."""

    has_official_test = False

    def cases(self) -> list[CaseRef]:
        return [CaseRef(r.case_id, r.patient_id, r.files, r.group, {"split": None}) for r in super().cases()]
