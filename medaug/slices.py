"""Reading prepared slices, their condition maps and the synthetic pools of a ratio.

numpy and pandas only: the segmentation, nnU-Net and report jobs read these arrays in
envs without the diffusion stack.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


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


def load_synthetic_pool(ratio_dir: str | Path, ratio: int) -> dict[str, np.ndarray]:
    """slice id -> (ratio, H, W) synthetic images in [-1, 1], from a ratio's manifest."""
    ratio_dir = Path(ratio_dir)
    manifest = pd.read_csv(ratio_dir / "manifest.tsv", sep="\t")
    manifest = manifest[manifest.k <= ratio]
    files = {name: np.load(ratio_dir.parent / name)["image"] for name in manifest.file.unique()}
    pool = {}
    for slice_id, group in manifest.groupby("source_slice_id"):
        if len(group) != ratio:
            raise ValueError(f"{ratio_dir}: slice {slice_id} has {len(group)} synthetic images, expected {ratio}")
        pool[slice_id] = np.stack([files[r.file][r.index] for r in group.itertuples()]).astype(np.float32)
    return pool
