"""A prepared DiffBoost dataset: its slices, their condition maps, the synthetic pool of a
ratio, and the one place where slices are chosen by role.

numpy and pandas only: the generator, the segmenters, the nnU-Net arm and the report all
read slices through here.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medaug.errors import DatasetError
from medaug.splits import LeakageError, role_cases

# A ratio folder's images: one shard per image index k (see shard_path).
SAMPLES = "samples"
OLD_SAMPLES = "samples.npz"
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


def shard_path(ratio_dir: str | Path, k: int) -> Path:
    """The shard of image ``k``: image ``k`` of every development slice, float16 (N, H, W),
    its rows in the order of :func:`development_slices` (the manifest's ``index``)."""
    return Path(ratio_dir) / SAMPLES / f"k{k:03d}.npy"


def check_pool_layout(ratio_dir: str | Path) -> None:
    """Refuse a ratio folder of the single-file layout rather than read it: its manifest's
    ``index`` counts rows of ``samples.npz``, not rows of a shard."""
    if (Path(ratio_dir) / OLD_SAMPLES).exists():
        raise DatasetError(
            ratio_dir,
            f"written by an older version of medaug (one {OLD_SAMPLES}, no {SAMPLES}/ shards); "
            "delete this folder and sample it again",
        )


class SlicePool(Sequence):
    """The synthetic images of one slice, read from the memory-mapped shards only when
    asked for: ``[k]`` (0-based) is its image ``k + 1`` as a float32 copy, ``len`` the
    ratio, iteration yields the images, and ``np.asarray`` stacks them (ratio, H, W)."""

    def __init__(self, shards: list[np.ndarray], rows: list[int]):
        self._shards, self._rows = shards, rows

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return np.stack([self[i] for i in range(*k.indices(len(self)))])
        return np.array(self.mapped(k), dtype=np.float32)

    def __iter__(self):
        return (self[k] for k in range(len(self)))

    def mapped(self, k: int) -> np.ndarray:
        """Image ``k + 1`` as a read-only float16 view of its shard: its pixels are read
        from disk only when used, and are never held as a private copy."""
        k = operator.index(k)
        if not -len(self) <= k < len(self):
            raise IndexError(f"image {k} of a pool of {len(self)}")
        return self._shards[k][self._rows[k]]

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self._shards[0].shape[1:]) if self._shards else (0,)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if copy is False:
            raise ValueError("a synthetic pool is read from its shards: it has no array to view without a copy")
        stacked = np.stack(list(self)) if len(self) else np.zeros(self.shape, np.float32)
        return stacked if dtype is None else stacked.astype(dtype, copy=False)


def load_synthetic_pool(ratio_dir: str | Path, ratio: int) -> dict[str, SlicePool]:
    """slice id -> its ``ratio`` synthetic images in [-1, 1] (:class:`SlicePool`). Only the
    shards ``k <= ratio`` are opened, memory-mapped: an image is read when it is indexed,
    so a job holds the images it uses, not the pool. A ratio's folder holds every image up
    to its ratio (rows listed by ``manifest.tsv``)."""
    ratio_dir = Path(ratio_dir)
    check_pool_layout(ratio_dir)
    manifest = read_manifest(ratio_dir)
    manifest = manifest[manifest.k <= ratio].sort_values("k")
    groups = dict(tuple(manifest.groupby("source_slice_id")))
    for slice_id, group in groups.items():
        if len(group) != ratio or group.k.nunique() != ratio:
            raise ValueError(f"{ratio_dir}: slice {slice_id} has {len(group)} synthetic images, expected {ratio}")
    shards = {}
    for k in range(1, ratio + 1):
        path = shard_path(ratio_dir, k)
        if not path.exists():
            raise DatasetError(path, f"missing: the manifest lists image {k} of every slice")
        shards[k] = np.load(path, mmap_mode="r")
        if len(manifest) and manifest["index"][manifest.k == k].max() >= len(shards[k]):
            raise DatasetError(path, f"has {len(shards[k])} rows, fewer than the manifest lists")
    return {
        slice_id: SlicePool([shards[k] for k in group.k], group["index"].tolist()) for slice_id, group in groups.items()
    }


class SliceData:
    """A prepared DiffBoost dataset in memory: arrays per case, the slice table, and the
    synthetic pool per slice (from a sampling manifest)."""

    def __init__(self, prepared_dir: str | Path, synthetic_dir: str | Path | None = None, ratio: int = 0):
        prepared = Path(prepared_dir)
        self.slices = read_slice_table(prepared)
        self.cases = pd.read_csv(prepared / "cases.tsv", sep="\t", dtype={"case_id": str, "patient_id": str})
        self.arrays = {case: dict(np.load(prepared / "arrays" / f"{case}.npz")) for case in self.cases.case_id}
        self.pool: dict[str, SlicePool] = {}
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
