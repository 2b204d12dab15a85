"""A prepared DiffBoost dataset: its slices, their condition maps, the synthetic pool of a
ratio, and the one place where slices are chosen by role.

numpy and pandas only: the generator, the segmenters, the nnU-Net arm and the report all
read slices through here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medaug.splits import LeakageError, role_cases

SAMPLES = "samples.npz"
MANIFEST = "manifest.tsv"
# Per protocol: (train on, select on) roles. "official": the official code's protocol.
PROTOCOL_ROLES = {"official": ("development", "test"), "clean": ("train", "val")}


def read_slice_table(prepared_dir: str | Path) -> pd.DataFrame:
    return pd.read_csv(Path(prepared_dir) / "slices.tsv", sep="\t", dtype={"case_id": str, "patient_id": str})


def role_slices(slices: pd.DataFrame, splits: dict, fold: int, role: str) -> pd.DataFrame:
    """The positive slices (the slices that train and select models) of ``role``'s cases."""
    chosen = slices[slices.case_id.isin(role_cases(splits, fold, role)) & slices.positive]
    return chosen.reset_index(drop=True)


def development_slices(prepared_dir: str | Path, splits: dict, fold: int) -> pd.DataFrame:
    """The positive slices of the fold's development cases: the only slices the generator
    ever trains on or is conditioned on. Raises LeakageError if a test case slips in."""
    slices = read_slice_table(prepared_dir)
    chosen = role_slices(slices, splits, fold, "development")
    test_patients = set(slices.patient_id[slices.case_id.isin(role_cases(splits, fold, "test"))])
    if test_patients & set(chosen.patient_id):
        raise LeakageError(f"fold {fold}: generator input contains test patients {sorted(test_patients)[:5]}")
    return chosen


def load_slices(
    prepared_dir: str | Path, conditions_dir: str | Path, rows: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N,H,W) in [-1,1] and condition maps (N,H,W) in [0,1] of ``rows``."""
    images, conditions = [], []
    for case_id, group in rows.groupby("case_id", sort=False):
        arrays = np.load(Path(prepared_dir) / "arrays" / f"{case_id}.npz")
        condition = np.load(Path(conditions_dir) / f"{case_id}.npz")["condition"]
        images.append(arrays["image"][group.slice_index.to_numpy()])
        conditions.append(condition[group.slice_index.to_numpy()])
    order = np.concatenate([g.index.to_numpy() for _, g in rows.groupby("case_id", sort=False)])
    inverse = np.argsort(order)
    return np.concatenate(images)[inverse].astype(np.float32), np.concatenate(conditions)[inverse].astype(np.float32)


def read_manifest(ratio_dir: str | Path) -> pd.DataFrame:
    return pd.read_csv(Path(ratio_dir) / MANIFEST, sep="\t")


def load_synthetic_pool(ratio_dir: str | Path, ratio: int) -> dict[str, np.ndarray]:
    """slice id -> (ratio, H, W) synthetic images in [-1, 1]. A ratio's folder holds every
    image up to its ratio (``samples.npz``, rows listed by ``manifest.tsv``)."""
    ratio_dir = Path(ratio_dir)
    manifest = read_manifest(ratio_dir)
    manifest = manifest[manifest.k <= ratio]
    samples = np.load(ratio_dir / SAMPLES)["image"]
    pool = {}
    for slice_id, group in manifest.groupby("source_slice_id"):
        if len(group) != ratio:
            raise ValueError(f"{ratio_dir}: slice {slice_id} has {len(group)} synthetic images, expected {ratio}")
        pool[slice_id] = samples[group["index"].to_numpy()].astype(np.float32)
    return pool


class SliceData:
    """A prepared DiffBoost dataset in memory: arrays per case, the slice table, and the
    synthetic pool per slice (from a sampling manifest)."""

    def __init__(self, prepared_dir: str | Path, synthetic_dir: str | Path | None = None, ratio: int = 0):
        prepared = Path(prepared_dir)
        self.slices = read_slice_table(prepared)
        self.cases = pd.read_csv(prepared / "cases.tsv", sep="\t", dtype={"case_id": str, "patient_id": str})
        self.arrays = {case: dict(np.load(prepared / "arrays" / f"{case}.npz")) for case in self.cases.case_id}
        self.pool: dict[str, np.ndarray] = {}
        if synthetic_dir is not None and ratio > 0:
            self.pool = load_synthetic_pool(synthetic_dir, ratio)

    def role_slices(self, splits: dict, fold: int, role: str) -> pd.DataFrame:
        return role_slices(self.slices, splits, fold, role)

    def images(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        image = np.stack([self.arrays[r.case_id]["image"][r.slice_index] for r in rows.itertuples()])
        mask = np.stack([self.arrays[r.case_id]["mask"][r.slice_index] for r in rows.itertuples()])
        return image.astype(np.float32), (mask > 0).astype(np.int64)

    def test_slices(self, splits: dict, fold: int, protocol: str) -> pd.DataFrame:
        """The slices a protocol scores: each test case's positive slices ("official", as
        the official code), or every slice of each test case ("clean": whole volumes)."""
        test = self.slices[self.slices.case_id.isin(role_cases(splits, fold, "test"))]
        return (test[test.positive] if protocol == "official" else test).reset_index(drop=True)
