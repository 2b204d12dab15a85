"""A prepared D-Cube dataset: its images, the one place where images are chosen by role, the
scenarios that shrink the training set, and the synthetic pool.

numpy and pandas only. Every stage (step-1 training, block selection, sampling, the
classifiers) reads its images through :func:`role_images`, which refuses a test image
anywhere but in the ``test`` role.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medaug.io import read_json
from medaug.seeds import keyed_rng
from medaug.splits import LeakageError, role_cases

SYNTHETIC_IMAGES = "images.npz"
SYNTHETIC_MANIFEST = "manifest.tsv"
# Scenario names: "full", "minority<f>" (keep fraction f of the minority class's training
# images), "limited<f>" (keep fraction f of every class's training images).
SCENARIO_RE = re.compile(r"(full)|(minority|limited)(0?\.\d+|1\.0|1)")


@dataclass(frozen=True)
class Images:
    """Images (N, S, S) in [-1, 1], their class indices and ids."""

    images: np.ndarray
    labels: np.ndarray
    case_ids: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def concat(self, other: Images) -> Images:
        return Images(
            np.concatenate([self.images, other.images]),
            np.concatenate([self.labels, other.labels]),
            self.case_ids + other.case_ids,
        )


def read_table(prepared_dir: str | Path) -> pd.DataFrame:
    return pd.read_csv(Path(prepared_dir) / "images.tsv", sep="\t", dtype={"case_id": str, "patient_id": str})


def classes(prepared_dir: str | Path) -> list[str]:
    return list(read_json(Path(prepared_dir) / "meta.json")["classes"])


def parse_scenario(name: str) -> tuple[str, float]:
    """("full", 1.0), ("minority", f) or ("limited", f)."""
    match = SCENARIO_RE.fullmatch(name)
    if not match:
        raise ValueError(f"unknown scenario {name!r} (expected full, minority<fraction> or limited<fraction>)")
    if match.group(1):
        return "full", 1.0
    return match.group(2), float(match.group(3))


def scenario_name(kind: str, fraction: float) -> str:
    return "full" if kind == "full" else f"{kind}{fraction:g}"


def minority_class(table: pd.DataFrame, configured: str | None) -> int:
    """The class the imbalance scenario shrinks: the configured one, else the class with the
    fewest training images (the smallest index on a tie)."""
    if configured is not None:
        matches = table.label_index[table.label == configured]
        if matches.empty:
            raise ValueError(f"dcube.scenarios.minority_class {configured!r} is not a class of this dataset")
        return int(matches.iloc[0])
    counts = table.label_index.value_counts()
    return int(min(counts.index, key=lambda index: (counts[index], index)))


def apply_scenario(rows: pd.DataFrame, scenario: str, minority: int, seed: int) -> pd.DataFrame:
    """The training rows a scenario keeps: a seeded subset, at least one image per class kept."""
    kind, fraction = parse_scenario(scenario)
    if kind == "full":
        return rows
    kept = []
    for label, group in rows.groupby("label_index", sort=True):
        if kind == "minority" and label != minority:
            kept.append(group)
            continue
        count = max(1, round(len(group) * fraction))
        rng = keyed_rng(seed, "scenario", scenario, int(label))
        kept.append(group.iloc[np.sort(rng.choice(len(group), count, replace=False))])
    return pd.concat(kept).sort_index()


def role_rows(prepared_dir: str | Path, splits: dict, role: str, scenario: str = "full", minority=None) -> pd.DataFrame:
    """The rows of ``role`` (train, val, test), the training role shrunk by ``scenario``
    (keyed by the split seed, so every stage of a scenario sees the same images). Raises
    LeakageError if a test image would be used outside the test role."""
    table = read_table(prepared_dir)
    chosen = table[table.case_id.isin(role_cases(splits, 0, role))]
    if role != "test":
        leaked = set(chosen.case_id) & role_cases(splits, 0, "test")
        if leaked:
            raise LeakageError(f"{role} images include test images {sorted(leaked)[:5]}")
    if role == "train":
        chosen = apply_scenario(chosen, scenario, minority_class(chosen, minority), splits["seed"])
    return chosen.reset_index(drop=True)


def load_images(prepared_dir: str | Path, rows: pd.DataFrame) -> Images:
    """``rows``' images in [-1, 1] (float32)."""
    table = read_table(prepared_dir)
    position = pd.Series(np.arange(len(table)), index=table.case_id)
    with np.load(Path(prepared_dir) / "images.npz") as arrays:
        stack = arrays["image"][position[rows.case_id].to_numpy()]
    images = stack.astype(np.float32) / 127.5 - 1.0
    return Images(images, rows.label_index.to_numpy(np.int64), list(rows.case_id))


def role_images(prepared_dir: str | Path, splits: dict, role: str, scenario: str = "full", minority=None) -> Images:
    return load_images(prepared_dir, role_rows(prepared_dir, splits, role, scenario, minority))


def read_synthetic(folder: str | Path, count: int | None = None) -> Images:
    """The first ``count`` images of a synthetic pool (all by default), as uint8-exact floats."""
    manifest = pd.read_csv(Path(folder) / SYNTHETIC_MANIFEST, sep="\t")
    with np.load(Path(folder) / SYNTHETIC_IMAGES) as arrays:
        stack = arrays["image"]
    if count is not None:
        manifest, stack = manifest.iloc[:count], stack[:count]
    return Images(stack.astype(np.float32) / 127.5 - 1.0, manifest.label_index.to_numpy(np.int64), list(manifest.id))


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] -> uint8, rounded (the official ``save_image``)."""
    return np.clip((images + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
