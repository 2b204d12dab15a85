"""Image classification sources: D-Cube's class tree, and BUSI read by class folder.

D-Cube reads ``<root>/{Train,Test}/<class>/*.png`` as grey images, with class indices in
natural-sorted folder order; the same order is used here. Images deeper than 8 bits come
to 0..255 as every reader brings them (``medaug.io.to_8bit_scale``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medaug.datasets.base import CaseRef, case_id_from, check_unique_ids, folder_entries, require_dir
from medaug.datasets.busi import BusiDataset
from medaug.errors import DatasetError
from medaug.io import read_image, to_gray

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SPLITS = ("Train", "Test")


class ClassTreeDataset:
    has_official_test = True

    def __init__(self, root: str | Path, classes: list[str] | None = None, **_ignored):
        self.root = Path(root)
        self.classes = classes

    def class_names(self) -> list[str]:
        require_dir(self.root / "Train", "Train folder")
        found = [p.name for p in folder_entries(self.root / "Train") if p.is_dir()]
        names = list(self.classes) if self.classes is not None else found
        if not names:
            raise DatasetError(self.root / "Train", "no class folders")
        return names

    def check_test_classes(self, names: list[str]) -> None:
        """A class folder only in Test would be dropped silently (classes come from Train)."""
        test = self.root / "Test"
        if self.classes is not None or not test.is_dir():
            return  # configured classes are a deliberate choice; a missing Test is reported below
        for folder in (p for p in folder_entries(test) if p.is_dir()):
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
                files = [p for p in folder_entries(folder) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
                if not files:
                    raise DatasetError(folder, "class folder contains no images")
                for path in files:
                    case_id = case_id_from(f"{split}_{class_name}_{path.stem}")
                    refs.append(CaseRef(case_id, case_id, {"image": path}, group=class_name, extra={"split": split}))
        check_unique_ids(refs)
        return refs

    def load_image(self, ref: CaseRef) -> np.ndarray:
        path = ref.files["image"]
        return to_gray(read_image(path), path)


class BusiClassification(BusiDataset):
    """BUSI's three class folders as a classification source (no official test split), with
    or without their masks."""

    has_official_test = False

    def cases(self, require_masks: bool = False) -> list[CaseRef]:
        refs = super().cases(require_masks=require_masks)
        return [CaseRef(r.case_id, r.patient_id, r.files, r.group, {"split": None}) for r in refs]
