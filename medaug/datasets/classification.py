"""Image classification sources: D-Cube's class tree, and BUSI read by class folder.

D-Cube reads ``<root>/{Train,Test}/<class>/*.png`` as grey images, with class indices in
natural-sorted folder order; the same order is used here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medaug.datasets.base import CaseRef, case_id_from, check_unique_ids, natural_key, require_dir
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
        found = sorted((p.name for p in (self.root / "Train").iterdir() if p.is_dir()), key=natural_key)
        names = list(self.classes) if self.classes is not None else found
        if not names:
            raise DatasetError(self.root / "Train", "no class folders")
        return names

    def cases(self) -> list[CaseRef]:
        refs = []
        for split in SPLITS:
            for class_name in self.class_names():
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
        return to_gray(read_image(path), path)


class BusiClassification(BusiDataset):
    """BUSI's three class folders as a classification source (no official test split)."""

    has_official_test = False

    def cases(self) -> list[CaseRef]:
        return [CaseRef(r.case_id, r.patient_id, r.files, r.group, {"split": None}) for r in super().cases()]
