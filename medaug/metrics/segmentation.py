"""Per-case segmentation metrics (MONAI), scored on real test data only.

Dice, precision, recall and HD95 of the foreground label, per case: a 2D image, or a 3D
volume at its native resolution with its voxel spacing. As in the official code's
evaluation (spec §1), an empty prediction or label gets its centre pixel set before scoring, so
that every case has finite metrics (an empty/empty pair then scores as a perfect match).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from monai.metrics import (
    compute_confusion_matrix_metric,
    compute_dice,
    compute_hausdorff_distance,
    get_confusion_matrix,
)


def _mark_centre_if_empty(mask: np.ndarray) -> np.ndarray:
    if mask.any():
        return mask
    mask = mask.copy()
    mask[tuple(s // 2 for s in mask.shape)] = True
    return mask


def case_metrics(prediction: np.ndarray, label: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    """Metrics of one case; ``prediction`` and ``label`` are same-shape masks (>0 = foreground),
    ``spacing`` is in mm per axis of the arrays."""
    if prediction.shape != label.shape:
        raise ValueError(f"prediction shape {prediction.shape} != label shape {label.shape}")
    pred = torch.from_numpy(_mark_centre_if_empty(prediction > 0)[None, None].astype(np.float32))
    true = torch.from_numpy(_mark_centre_if_empty(label > 0)[None, None].astype(np.float32))
    confusion = get_confusion_matrix(pred, true, include_background=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI's own deprecation inside get_mask_edges
        hd95 = compute_hausdorff_distance(pred, true, include_background=True, percentile=95, spacing=list(spacing))
    return {
        "dice": float(compute_dice(pred, true, include_background=True)),
        "precision": float(compute_confusion_matrix_metric("precision", confusion)),
        "recall": float(compute_confusion_matrix_metric("recall", confusion)),
        "hd95": float(hd95),
    }


def resize_nearest(masks: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(S, H, W) label stack -> (S, rows, cols) by nearest neighbour (predictions back to native size)."""
    from skimage.transform import resize

    if masks.shape[1:] == (rows, cols):
        return masks
    return resize(masks, (masks.shape[0], rows, cols), order=0, anti_aliasing=False, preserve_range=True).astype(
        masks.dtype
    )
