"""BUSI (Al-Dhabyani et al. 2020) exactly as distributed.

``Dataset_BUSI_with_GT/{benign,malignant,normal}/<class> (N).png`` with the lesion mask
``<class> (N)_mask.png`` and, for multifocal cases, ``_mask_1.png``, ``_mask_2.png``...
Masks are 0/255 and are OR-merged into one lesion label. BUSI has no patient ids, so
each image is its own patient (the official code's folds are per image too).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from medaug.datasets.base import (
    CaseRef,
    SegmentationCase,
    case_id_from,
    check_label_values,
    check_same_shape,
    check_unique_ids,
    folder_entries,
    require_dir,
)
from medaug.errors import DatasetError
from medaug.io import SKIMAGE, read_image, to_gray

MASK_PATTERN = re.compile(r"^(?P<stem>.+?)_mask(?:_(?P<index>\d+))?$", re.IGNORECASE)
MASK_VALUES = (0, 255)


class BusiDataset:
    labels = {0: "background", 1: "lesion"}

    def __init__(self, root: str | Path, classes: list[str] | None = None, **_ignored):
        self.root = Path(root)
        self.classes = classes

    def class_names(self) -> list[str]:
        require_dir(self.root, "BUSI dataset folder")
        found = [p.name for p in folder_entries(self.root) if p.is_dir()]
        if self.classes is None:
            if not found:
                raise DatasetError(self.root, "no class folders (expected benign/, malignant/, normal/)")
            return found
        for name in self.classes:
            require_dir(self.root / name, f"class folder '{name}'")
        return list(self.classes)

    def cases(self, require_masks: bool = True) -> list[CaseRef]:
        """Every image with its masks; without ``require_masks``, an image may have none
        (classification reads a class tree with or without them)."""
        refs = []
        for class_name in self.class_names():
            folder = self.root / class_name
            images: dict[str, Path] = {}
            masks: dict[str, list[tuple[int, Path]]] = {}
            for path in folder_entries(folder):
                if not path.is_file() or path.suffix.lower() != ".png":
                    continue
                match = MASK_PATTERN.match(path.stem)
                if match:
                    index = int(match["index"]) if match["index"] is not None else 0
                    masks.setdefault(match["stem"], []).append((index, path))
                else:
                    images[path.stem] = path
            if not images:
                raise DatasetError(folder, "class folder contains no images")
            for stem in sorted(masks.keys() - images.keys()):
                raise DatasetError(masks[stem][0][1], "mask without a matching image")
            for stem, image_path in images.items():
                stem_masks = sorted(masks.get(stem, []))
                if require_masks and (not stem_masks or stem_masks[0][0] != 0):
                    raise DatasetError(image_path, f"missing mask (expected {folder / (stem + '_mask.png')})")
                files = {"image": image_path}
                files.update({f"mask_{index}": path for index, path in stem_masks})
                case_id = case_id_from(stem)
                refs.append(CaseRef(case_id, case_id, files, group=class_name))
        check_unique_ids(refs)
        return refs

    def load(self, ref: CaseRef) -> SegmentationCase:
        image_path = ref.files["image"]
        image = to_gray(read_image(image_path), image_path, SKIMAGE)  # as the official preprocessing
        lesion = np.zeros(image.shape, dtype=bool)
        for key, path in ref.files.items():
            if not key.startswith("mask"):
                continue
            mask = read_image(path)
            mask = mask if mask.ndim == 2 else to_gray(mask, path).round()
            check_same_shape(path, mask.shape, image.shape, "mask")
            check_label_values(path, mask, MASK_VALUES, what="mask values")
            lesion |= mask > 0
        return SegmentationCase(ref, image[None], lesion[None].astype(np.uint8), (1.0, 1.0, 1.0))

    def load_image(self, ref: CaseRef) -> np.ndarray:
        """The grey image alone (classification use: masks are neither needed nor read)."""
        path = ref.files["image"]
        return to_gray(read_image(path), path, SKIMAGE)
