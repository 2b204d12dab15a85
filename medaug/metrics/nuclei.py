"""Nuclear instance segmentation and classification metrics, the HoVer-Net protocol
(``compute_stats.py`` of vqdang/hover_net, spec §2.5).

Per image, then averaged over images: binary Dice of the foreground, AJI, and DQ/SQ/PQ at
IoU 0.5 (MONAI's panoptic quality, binary: every nucleus one class). Pooled over all images
of a set: detection F_d, type accuracy and the per-class F_c, after pairing each true
nucleus' centroid with a predicted one (Hungarian assignment on Euclidean distance, pairs
farther than ``radius`` = 12 px dropped). A nucleus' type is the most frequent non-zero
type of its pixels, and its centroid the mean of its pixels, for the truth too (HoVer-Net
reads the truth's from the label file's ``inst_type`` and ``inst_centroid``, which the
dataset loader checks against the maps). An image without nuclei adds none (HoVer-Net adds
a dummy nucleus of type 0 at (0, 0)); AJI+ is not computed.

F_c of type t (HoVer-Net's weighted F1) counts, among paired nuclei where the true or the
predicted type is t: TP (both t), TN (neither t, so always 0 after that filter), FP (only
the prediction t), FN (only the truth t); and the unpaired nuclei of type t, predicted
(FP_d) or true (FN_d):
``F_c = 2 (TP + TN) / (2 (TP + TN) + w0 FP + w1 FN + w2 FP_d + w3 FN_d)``, w = (2, 2, 1, 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PAIRING_RADIUS_PX = 12.0
TYPE_WEIGHTS = (2.0, 2.0, 1.0, 1.0)
MATCH_IOU = 0.5


def instance_ids(inst_map: np.ndarray) -> np.ndarray:
    return np.unique(inst_map[inst_map > 0])


def instance_types(inst_map: np.ndarray, type_map: np.ndarray) -> dict[int, int]:
    """Each instance's most frequent non-zero type, the lowest on a tie (0 if all its pixels
    say background)."""
    ids = instance_ids(inst_map)
    if not len(ids):
        return {}
    inside = inst_map > 0
    types = type_map[inside].astype(np.int64)
    top = int(types.max()) + 1
    votes = np.bincount(inst_map[inside].astype(np.int64) * top + types, minlength=(int(ids.max()) + 1) * top)
    votes = votes.reshape(-1, top)
    votes[:, 0] = 0  # background pixels inside a nucleus do not vote
    return {int(i): int(votes[i].argmax()) if votes[i].any() else 0 for i in ids}


def instance_centroids(inst_map: np.ndarray) -> dict[int, np.ndarray]:
    """Each instance's centroid as (x, y)."""
    ids = instance_ids(inst_map)
    if not len(ids):
        return {}
    rows, cols = np.indices(inst_map.shape)
    flat = inst_map.ravel().astype(np.int64)
    area = np.bincount(flat)
    x = np.bincount(flat, cols.ravel()) / np.maximum(area, 1)
    y = np.bincount(flat, rows.ravel()) / np.maximum(area, 1)
    return {int(i): np.array([x[i], y[i]]) for i in ids}


def binary_dice(true_inst: np.ndarray, pred_inst: np.ndarray) -> float:
    """HoVer-Net's ``get_dice_1``: Dice of the foregrounds; two empty maps give NaN."""
    true, pred = true_inst > 0, pred_inst > 0
    total = true.sum() + pred.sum()
    return float(2 * (true & pred).sum() / total) if total else float("nan")


def aji(true_inst: np.ndarray, pred_inst: np.ndarray) -> float:
    """Aggregated Jaccard Index (HoVer-Net's ``get_fast_aji``): each true nucleus takes the
    predicted nucleus of highest IoU among those it overlaps (none: its area joins the
    union); every predicted nucleus never taken adds its area to the union."""
    true_ids, pred_ids = instance_ids(true_inst), instance_ids(pred_inst)
    if not len(true_ids) and not len(pred_ids):
        return float("nan")
    pred_area = {int(p): int((pred_inst == p).sum()) for p in pred_ids}
    intersection_sum = union_sum = 0
    taken = set()
    for t in true_ids:
        own = true_inst == t
        overlapping = np.unique(pred_inst[own & (pred_inst > 0)])
        best, best_iou, best_pair = None, -1.0, (0, int(own.sum()))
        for p in overlapping:
            inter = int((own & (pred_inst == p)).sum())
            union = int(own.sum()) + pred_area[int(p)] - inter
            if inter / union > best_iou:
                best, best_iou, best_pair = int(p), inter / union, (inter, union)
        intersection_sum += best_pair[0]
        union_sum += best_pair[1]
        if best is not None:
            taken.add(best)
    union_sum += sum(area for p, area in pred_area.items() if p not in taken)
    return float(intersection_sum / union_sum) if union_sum else float("nan")


def panoptic_quality(true_inst: np.ndarray, pred_inst: np.ndarray, match_iou: float = MATCH_IOU) -> dict[str, float]:
    """Binary DQ, SQ and PQ with MONAI's ``compute_panoptic_quality`` (pairs at IoU > 0.5
    are unique). DQ = TP / (TP + FP/2 + FN/2), SQ = mean IoU of the pairs, PQ = DQ·SQ."""
    import torch
    from monai.metrics import compute_panoptic_quality

    counts = compute_panoptic_quality(
        torch.as_tensor(pred_inst.astype(np.int64)),
        torch.as_tensor(true_inst.astype(np.int64)),
        match_iou_threshold=match_iou,
        output_confusion_matrix=True,
    )
    tp, fp, fn, iou_sum = (float(v) for v in counts)
    if tp + fp + fn == 0:
        return {"dq": float("nan"), "sq": float("nan"), "pq": float("nan")}
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = iou_sum / tp if tp else 0.0
    return {"dq": dq, "sq": sq, "pq": dq * sq}


def pair_centroids(true_xy: np.ndarray, pred_xy: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into true, into pred) of the pairs of a minimum-total-distance assignment
    whose distance is at most ``radius``."""
    if not len(true_xy) or not len(pred_xy):
        return np.zeros(0, int), np.zeros(0, int)
    from scipy.optimize import linear_sum_assignment

    distance = np.linalg.norm(true_xy[:, None, :] - pred_xy[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(distance)
    keep = distance[rows, cols] <= radius
    return rows[keep], cols[keep]


@dataclass
class TypeCounts:
    """Pooled detection/classification counts over images."""

    paired_true: list[int] = field(default_factory=list)
    paired_pred: list[int] = field(default_factory=list)
    unpaired_true: list[int] = field(default_factory=list)
    unpaired_pred: list[int] = field(default_factory=list)

    def add(self, true_types: list[int], pred_types: list[int], true_index: np.ndarray, pred_index: np.ndarray):
        self.paired_true += [true_types[i] for i in true_index]
        self.paired_pred += [pred_types[i] for i in pred_index]
        paired_true, paired_pred = set(true_index.tolist()), set(pred_index.tolist())
        self.unpaired_true += [t for i, t in enumerate(true_types) if i not in paired_true]
        self.unpaired_pred += [t for i, t in enumerate(pred_types) if i not in paired_pred]

    def detection_f1(self) -> float:
        tp, fp, fn = len(self.paired_true), len(self.unpaired_pred), len(self.unpaired_true)
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")

    def type_accuracy(self) -> float:
        if not self.paired_true:
            return float("nan")
        return float(np.mean(np.array(self.paired_true) == np.array(self.paired_pred)))

    def type_f1(self, type_id: int, weights: tuple[float, ...] = TYPE_WEIGHTS) -> float:
        true, pred = np.array(self.paired_true, int), np.array(self.paired_pred, int)
        involved = (true == type_id) | (pred == type_id)
        true, pred = true[involved], pred[involved]
        tp = ((true == type_id) & (pred == type_id)).sum()
        tn = ((true != type_id) & (pred != type_id)).sum()
        fp = ((true != type_id) & (pred == type_id)).sum()
        fn = ((true == type_id) & (pred != type_id)).sum()
        fp_d = (np.array(self.unpaired_pred, int) == type_id).sum()
        fn_d = (np.array(self.unpaired_true, int) == type_id).sum()
        denominator = 2 * (tp + tn) + weights[0] * fp + weights[1] * fn + weights[2] * fp_d + weights[3] * fn_d
        return float(2 * (tp + tn) / denominator) if denominator else float("nan")


def score_image(
    true_inst: np.ndarray,
    true_type: np.ndarray,
    pred_inst: np.ndarray,
    pred_type: np.ndarray,
    counts: TypeCounts,
    radius: float = PAIRING_RADIUS_PX,
) -> dict[str, float]:
    """One image's instance metrics; adds its paired and unpaired nuclei to ``counts``."""
    true_centroids, pred_centroids = instance_centroids(true_inst), instance_centroids(pred_inst)
    true_types, pred_types = instance_types(true_inst, true_type), instance_types(pred_inst, pred_type)
    true_ids, pred_ids = sorted(true_centroids), sorted(pred_centroids)
    true_xy = np.array([true_centroids[i] for i in true_ids]).reshape(-1, 2)
    pred_xy = np.array([pred_centroids[i] for i in pred_ids]).reshape(-1, 2)
    true_index, pred_index = pair_centroids(true_xy, pred_xy, radius)
    counts.add([true_types[i] for i in true_ids], [pred_types[i] for i in pred_ids], true_index, pred_index)
    return {"dice": binary_dice(true_inst, pred_inst), "aji": aji(true_inst, pred_inst)} | panoptic_quality(
        true_inst, pred_inst
    )


def score_set(pairs: list[tuple[np.ndarray, ...]], types: list[int]) -> dict[str, float]:
    """The HoVer-Net summary of a set of images, each ``(true_inst, true_type, pred_inst,
    pred_type)``: image-averaged Dice, AJI, DQ, SQ, PQ; pooled F_d, type accuracy and F_c
    per type (``f1_type<t>``)."""
    counts = TypeCounts()
    per_image = [score_image(*pair, counts) for pair in pairs]
    summary = {key: float(np.nanmean([row[key] for row in per_image])) for key in per_image[0]}
    summary |= {"f1_detection": counts.detection_f1(), "type_accuracy": counts.type_accuracy()}
    summary |= {f"f1_type{t}": counts.type_f1(t) for t in types}
    return summary
