"""Per-case segmentation metrics, as the official evaluation (spec §1) computes them.

Dice, Jaccard, precision, recall, accuracy, HD95 and ASSD of the foreground label, per
case: a 2D image, or a 3D volume at its native resolution with its voxel spacing. The
formulas are the official ones (nnU-Net's confusion matrix with 1e-3 added to each entry;
medpy's surface distances: the border of a mask is what one erosion with the
face-connected structure removes, and HD95 is the 95th percentile of both directed
distance sets pooled, ASSD the mean of the two directed means).

Empty masks: the official evaluation sets the centre voxel of an empty prediction or label
before scoring (``empty="centre"``, the official protocol), so that an empty prediction's
HD95 is the distance to the centre, which can beat a real prediction's. The clean protocol
(``empty="worst"``) scores a case where exactly one of prediction and label is empty as a
failure: 0 on every overlap metric, and the largest distance the volume allows (its
diagonal) on HD95 and ASSD; an empty/empty pair is a perfect match. Either way the case
records whether its prediction was empty.
"""

from __future__ import annotations

import numpy as np

# Added to each confusion-matrix entry by the official evaluation (nnU-Net's ConfusionMatrix).
SMOOTH = 1e-3
EMPTY_RULES = ("centre", "worst")


def _border(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion, generate_binary_structure

    structure = generate_binary_structure(mask.ndim, 1)
    return mask ^ binary_erosion(mask, structure=structure, iterations=1)


def surface_distances(source: np.ndarray, target: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Distance from every border voxel of ``source`` to the nearest border voxel of
    ``target`` (both non-empty boolean masks), in the units of ``spacing``."""
    from scipy.ndimage import distance_transform_edt

    to_target = distance_transform_edt(~_border(target), sampling=spacing)
    return to_target[_border(source)]


def _mark_centre_if_empty(mask: np.ndarray) -> np.ndarray:
    if mask.any():
        return mask
    mask = mask.copy()
    mask[tuple(s // 2 for s in mask.shape)] = True
    return mask


def case_metrics(
    prediction: np.ndarray, label: np.ndarray, spacing: tuple[float, ...], empty: str = "centre"
) -> dict[str, float]:
    """Metrics of one case; ``prediction`` and ``label`` are same-shape masks (>0 = foreground),
    ``spacing`` is the voxel size per axis; ``empty`` is the rule for empty masks (see above)."""
    if prediction.shape != label.shape:
        raise ValueError(f"prediction shape {prediction.shape} != label shape {label.shape}")
    if empty not in EMPTY_RULES:
        raise ValueError(f"unknown empty-mask rule {empty!r} (known: {', '.join(EMPTY_RULES)})")
    pred, true = prediction > 0, label > 0
    record = {"empty_prediction": float(not pred.any())}
    if empty == "worst" and pred.any() != true.any():
        worst = float(np.sqrt(np.sum((np.array(pred.shape) * np.array(spacing, dtype=float)) ** 2)))
        overlap = dict.fromkeys(("dice", "jaccard", "precision", "recall"), 0.0)
        accuracy = float((pred == true).mean())
        return {**overlap, "accuracy": accuracy, "hd95": worst, "assd": worst, **record}
    if empty == "worst" and not pred.any():
        perfect = dict.fromkeys(("dice", "jaccard", "precision", "recall", "accuracy"), 1.0)
        return {**perfect, "hd95": 0.0, "assd": 0.0, **record}
    pred, true = _mark_centre_if_empty(pred), _mark_centre_if_empty(true)
    tp = float((pred & true).sum()) + SMOOTH
    fp = float((pred & ~true).sum()) + SMOOTH
    tn = float((~pred & ~true).sum()) + SMOOTH
    fn = float((~pred & true).sum()) + SMOOTH
    forward, backward = surface_distances(pred, true, spacing), surface_distances(true, pred, spacing)
    return {
        "dice": 2 * tp / (2 * tp + fp + fn),
        "jaccard": tp / (tp + fp + fn),
        "precision": tp / (tp + fp),
        "recall": tp / (tp + fn),
        "accuracy": (tp + tn) / (tp + fp + tn + fn),
        "hd95": float(np.percentile(np.hstack([forward, backward]), 95)),
        "assd": float((forward.mean() + backward.mean()) / 2),
        **record,
    }


def resize_nearest(masks: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(S, H, W) label stack -> (S, rows, cols) by nearest neighbour (predictions back to native size)."""
    from skimage.transform import resize

    if masks.shape[1:] == (rows, cols):
        return masks
    return resize(masks, (masks.shape[0], rows, cols), order=0, anti_aliasing=False, preserve_range=True).astype(
        masks.dtype
    )
