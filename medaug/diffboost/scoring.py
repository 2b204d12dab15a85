"""Per-case scoring of a fold's real test cases: the one loop the MONAI and nnU-Net arms share."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from medaug.diffboost.slices import SliceData
from medaug.metrics.segmentation import case_metrics, resize_nearest
from medaug.splits import role_cases

# How each protocol scores empty masks (medaug.metrics.segmentation): the official
# centre-voxel rule, or the clean protocol's worst case.
EMPTY_RULES = {"official": "centre", "clean": "worst"}


def score_cases(
    data: SliceData, splits: dict, fold: int, protocol: str, predict: Callable[[pd.DataFrame], np.ndarray]
) -> tuple[pd.DataFrame, list[str]]:
    """Per-case metrics of the fold's test cases under ``protocol``, and the test cases
    without a slice to score. ``predict(slice rows)`` returns their (S, H, W) masks at
    the prepared size; they are scored at each case's native resolution and spacing."""
    slices = data.test_slices(splits, fold, protocol)
    cases = data.cases.set_index("case_id")
    rows = []
    for case_id, group in slices.groupby("case_id", sort=True):
        info = cases.loc[case_id]
        predicted = resize_nearest(predict(group), int(info.native_rows), int(info.native_cols))
        label = data.arrays[case_id]["mask_native"][group.slice_index.to_numpy()]
        spacing = (info.spacing_slice, info.spacing_row, info.spacing_col)
        if len(group) == 1:  # a 2D image is scored in 2D
            predicted, label, spacing = predicted[0], label[0], spacing[1:]
        rows.append(
            {
                "case_id": case_id,
                "n_slices": len(group),
                **case_metrics(predicted, label, spacing, EMPTY_RULES[protocol]),
            }
        )
    unscored = sorted(role_cases(splits, fold, "test") - set(slices.case_id))
    return pd.DataFrame(rows), unscored
