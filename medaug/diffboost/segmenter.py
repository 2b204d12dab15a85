"""DiffBoost's MONAI arm: a 2D segmenter trained with the random merging mask.

Each training item is a real slice plus one synthetic variant of it, drawn uniformly from
the slice's pool of ``ratio`` synthetic images; both share the real mask. The network
sees both images, and the loss is DiceCE of the predictions merged patch-wise by a
Bernoulli(alpha) mask (1 = the real image's prediction) against the shared label
(spec §1.4). The baseline and classical-augmentation arms of the paper train the same
network on real slices only (they crash in the official code; here they run).

Two protocols are produced, each from its own training run:
- ``official``: train on the fold's development (train + val) slices, select the epoch on
  the test fold's positive slices, score the positive slices of each test case;
- ``clean``: train on the train slices, select on the inner validation slices, score
  each test case's full volume at native resolution.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from medaug.diffboost import stages
from medaug.diffboost.params import DIFFUSION_AUGMENTATIONS
from medaug.diffboost.scoring import score_cases
from medaug.diffboost.slices import PROTOCOL_ROLES, SliceData
from medaug.io import read_json
from medaug.monai_imports import import_monai
from medaug.stage import Job, Stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """One downstream experiment: network, augmentation arm and merging-mask settings."""

    architecture: str
    augmentation: str  # "none", a classical arm, "DiffBoost" or "DiffBoostPlus"
    ratio: int = 0  # synthetic pool per real slice; 0 for arms without synthetic data
    # The merging mask's cell size and alpha: set for the arms that mix synthetic images
    # in (DIFFUSION_AUGMENTATIONS), unread by the others.
    patch_size: int | None = None
    alpha: float | None = None


def build_network(architecture: str, image_size: int, channels: list[int], strides: list[int]) -> torch.nn.Module:
    """2D MONAI network with 1 input channel and 2 output classes (background, foreground),
    configured as the official ``default_network_configs.yaml``: ResUNet is MONAI's UNet
    with one residual unit per block; UNETR and SwinUNETR keep MONAI's defaults."""
    import_monai()
    from monai.networks import nets

    if architecture == "AttentionUnet":
        return nets.AttentionUnet(spatial_dims=2, in_channels=1, out_channels=2, channels=channels, strides=strides)
    if architecture in ("UNet", "ResUNet"):
        residual_units = 1 if architecture == "ResUNet" else 0
        return nets.UNet(2, 1, 2, channels=channels, strides=strides, num_res_units=residual_units)
    if architecture == "UNETR":
        return nets.UNETR(1, 2, img_size=image_size, spatial_dims=2)
    if architecture == "SwinUNETR":
        return nets.SwinUNETR(1, 2, spatial_dims=2)
    raise ValueError(f"unknown architecture '{architecture}'")


def random_merging_mask(
    batch: int, height: int, width: int, patch_size: int, alpha: float, generator: torch.Generator
) -> torch.Tensor:
    """(batch, 1, height, width) float mask of patch_size × patch_size cells, each 1 with
    probability ``alpha`` (take the real image's prediction) and 0 otherwise."""
    cells = (batch, 1, math.ceil(height / patch_size), math.ceil(width / patch_size))
    grid = (torch.rand(cells, generator=generator) < alpha).float()
    return grid.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)[:, :, :height, :width]


# --- augmentations (batchgenerators parameters of the official arms) --------------------


def _affine(
    images: list[torch.Tensor], angle: torch.Tensor, scale: torch.Tensor, flips: torch.Tensor
) -> list[torch.Tensor]:
    """Apply one random rotation/scale/flip per sample to several aligned batches, as
    batchgenerators' SpatialTransform does with its defaults: images by cubic interpolation
    with the edge value outside the field of view, the last batch (the label map) by nearest
    neighbour with background outside. ``scale`` multiplies the sampling coordinates (> 1
    shows more of the image, smaller), batchgenerators' convention."""
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.zeros(len(angle), 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta[:, 0, :2] *= flips[:, 1:2]
    theta[:, 1, :2] *= flips[:, 0:1]
    grid = F.affine_grid(theta, list(images[0].shape), align_corners=False)
    out = [F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False) for x in images[:-1]]
    out.append(F.grid_sample(images[-1], grid, mode="nearest", padding_mode="zeros", align_corners=False))
    return out


def _spatial(name: str, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample rotation, scale and flips. DiffBoostPlus uses nnU-Net v1's 2D spatial
    defaults (rotation ±180° and scale 0.85-1.25, each with p 0.2; mirroring per axis),
    as the official `spatial_aug` does."""
    angle, scale, flips = torch.zeros(n), torch.ones(n), torch.ones(n, 2)
    if name == "RandomRotate":
        angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(5)
    elif name == "RandomScale":
        scale = 0.95 + 0.1 * torch.rand(n, generator=g)
    elif name == "DiffBoostPlus":
        angle = torch.where(torch.rand(n, generator=g) < 0.2, (torch.rand(n, generator=g) * 2 - 1) * math.pi, 0.0)
        scale = torch.where(torch.rand(n, generator=g) < 0.2, 0.85 + 0.4 * torch.rand(n, generator=g), 1.0)
    if name in ("RandomMirror", "DiffBoostPlus"):
        flip_sample = torch.rand(n, generator=g) < (0.75 if name == "RandomMirror" else 1.0)
        flip_axes = torch.rand(n, 2, generator=g) < 0.5
        flips = torch.where(flip_sample[:, None] & flip_axes, -1.0, 1.0)
    return angle, scale, flips


def _intensity(name: str, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    if name == "RandomContrast":
        factor = 0.75 + 0.5 * torch.rand(n, 1, 1, 1, generator=g)
        mean = x.mean(dim=(2, 3), keepdim=True)
        low, high = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
        return torch.maximum(torch.minimum((x - mean) * factor + mean, high), low)
    if name == "RandomGamma":
        # batchgenerators' augment_gamma: half the samples draw from (0.7, 1), half from (1, 1.5)
        below = torch.rand(n, 1, 1, 1, generator=g) < 0.5
        unit_draw = torch.rand(n, 1, 1, 1, generator=g)
        gamma = torch.where(below, 0.7 + 0.3 * unit_draw, 1.0 + 0.5 * unit_draw)
        low, high = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
        unit = (x - low) / (high - low + 1e-7)
        return unit**gamma * (high - low) + low
    if name == "RandomBrightness":
        return x + 0.5 * torch.randn(n, 1, 1, 1, generator=g)
    if name == "RandomNoise":
        # batchgenerators draws "noise_variance" from (0, 0.05) and uses it as the std
        std = 0.05 * torch.rand(n, 1, 1, 1, generator=g)
        return x + std * torch.randn(x.shape, generator=g)
    if name == "RandomResolution":
        out = x.clone()
        for i in range(n):
            if torch.rand(1, generator=g) < 0.5:
                sigma = 0.5 + torch.rand(1, generator=g).item()
                radius = max(1, int(3 * sigma))
                taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1) / sigma) ** 2)
                taps = (taps / taps.sum()).float()
                row = F.conv2d(F.pad(x[i : i + 1], (radius, radius, 0, 0), mode="replicate"), taps.view(1, 1, 1, -1))
                out[i : i + 1] = F.conv2d(F.pad(row, (0, 0, radius, radius), mode="replicate"), taps.view(1, 1, -1, 1))
        return out
    return x


def _minmax(*images: torch.Tensor) -> list[torch.Tensor]:
    """Min-max scaling to [-1, 1] after augmentation, with one range per sample over all
    ``images`` together: the official pipeline scales the real image and its synthetic
    partner as one two-channel array."""
    stacked = torch.cat(images, dim=1)
    low, high = stacked.amin(dim=(1, 2, 3), keepdim=True), stacked.amax(dim=(1, 2, 3), keepdim=True)
    return [2 * (x - low) / (high - low + 1e-7) - 1 for x in images]


def augment(
    name: str, real: torch.Tensor, synthetic: torch.Tensor | None, label: torch.Tensor, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One arm's augmentation; spatial transforms move image(s) and label together."""
    if name in ("RandomRotate", "RandomScale", "RandomMirror", "DiffBoostPlus"):
        params = _spatial(name, real.shape[0], g)
        batches = [real] + ([synthetic] if synthetic is not None else []) + [label]
        moved = _affine(batches, *params)
        real, label = moved[0], moved[-1]
        synthetic = moved[1] if synthetic is not None else None
    real = _intensity(name, real, g)
    if synthetic is None:
        return _minmax(real)[0], None, label
    real, synthetic = _minmax(real, synthetic)
    return real, synthetic, label


# --- data -----------------------------------------------------------------------------------


def training_device() -> torch.device:
    """Where the segmenters train: the GPU a job was given, else the CPU. Data, augmentation
    and the merging mask are drawn on the CPU from the seeded generator either way, so a
    GPU run draws the same batches as a CPU run."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.inference_mode()
def predict(network: torch.nn.Module, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """(N, H, W) images in [-1, 1] -> (N, H, W) uint8 foreground masks, on the network's device."""
    network.eval()
    device = next(network.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start : start + batch_size, None]).to(device)
        out.append(network(x).argmax(dim=1).to(torch.uint8).cpu().numpy())
    network.train()
    return np.concatenate(out) if out else np.zeros((0, *images.shape[1:]), dtype=np.uint8)


def _predict_rows(network: torch.nn.Module, data: SliceData, rows: pd.DataFrame) -> np.ndarray:
    return predict(network, data.images(rows)[0])


def quick_dice(prediction: np.ndarray, label: np.ndarray) -> float:
    """Mean per-slice foreground Dice, for model selection (empty/empty counts as 1)."""
    inter = (prediction * label).reshape(len(label), -1).sum(1)
    total = prediction.reshape(len(label), -1).sum(1) + label.reshape(len(label), -1).sum(1)
    return float(np.mean(np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)))


def pooled_batch_dice(prediction: np.ndarray, label: np.ndarray, batch_size: int) -> float:
    """The official selection metric: foreground Dice pooled over each batch of
    ``batch_size`` slices, averaged over batches weighted by their size (as Lightning
    averages a logged step metric); an empty/empty batch counts as 1."""
    scores, weights = [], []
    for start in range(0, len(label), batch_size):
        p, y = prediction[start : start + batch_size], label[start : start + batch_size]
        total = p.sum() + y.sum()
        scores.append(2 * (p * y).sum() / total if total else 1.0)
        weights.append(len(y))
    return float(np.average(scores, weights=weights))


def fit(
    train: tuple[np.ndarray, np.ndarray],
    select: tuple[np.ndarray, np.ndarray],
    variant: Variant,
    settings: dict,
    image_size: int,
    seed: int,
    protocol: str,
    pools: list[np.ndarray] | None = None,
    device: str | torch.device | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Train one network on ``train`` (images (N,H,W) in [-1,1], labels (N,H,W)) and select
    its epoch on ``select``; ``pools[i]``: the synthetic images of training slice ``i``, for
    the diffusion arms. Under the official protocol the data order is fixed (the official
    loader does not shuffle) and the selection metric is the official batch-pooled Dice; the
    clean protocol shuffles each epoch and selects on the mean per-slice Dice. ``device``:
    where to train (default: the job's GPU if it has one)."""
    official = protocol == "official"
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    device = torch.device(device) if device is not None else training_device()
    network = build_network(variant.architecture, image_size, settings["channels"], settings["strides"]).to(device)
    # fused: the same update in one kernel, not a loop over the network's many small tensors.
    optimizer = torch.optim.AdamW(network.parameters(), lr=settings["learning_rate"], fused=True)
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(softmax=True, to_onehot_y=True, include_background=False)
    images, labels = train
    select_images, select_labels = select
    uses_synthetic = variant.augmentation in DIFFUSION_AUGMENTATIONS
    if uses_synthetic and (pools is None or len(pools) != len(images)):
        raise ValueError(f"the {variant.augmentation} arm needs a synthetic pool per training slice")
    best = {"score": -1.0, "epoch": -1, "state": None}
    history = []
    batch_size = settings["batch_size"]
    for epoch in tqdm(range(settings["epochs"]), desc=protocol, unit="epoch", mininterval=5):
        order = np.arange(len(images)) if official else torch.randperm(len(images), generator=g).numpy()
        losses = []
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            if len(index) < 2:  # BatchNorm cannot train on one sample; it returns next epoch
                continue
            x = torch.from_numpy(images[index, None])
            y = torch.from_numpy(labels[index, None]).float()
            x_syn = None
            if uses_synthetic:
                picks = torch.randint(0, variant.ratio, (len(index),), generator=g).numpy()
                x_syn = torch.from_numpy(np.stack([pools[i][k] for i, k in zip(index, picks, strict=True)])[:, None])
            arm = variant.augmentation if variant.augmentation != "DiffBoost" else "none"
            x, x_syn, y = augment(arm, x, x_syn, y, g)
            x, y = x.to(device), y.to(device)
            prediction = network(x)
            if x_syn is not None:
                merge = random_merging_mask(len(index), *x.shape[2:], variant.patch_size, variant.alpha, g).to(device)
                prediction = merge * prediction + (1 - merge) * network(x_syn.to(device))
            loss = loss_fn(prediction, y.round().long())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        record = {"epoch": epoch, "loss": float(np.mean(losses))}
        if (epoch + 1) % settings["eval_every"] == 0 or epoch + 1 == settings["epochs"]:
            predicted = predict(network, select_images)
            if official:
                score = pooled_batch_dice(predicted, select_labels, batch_size)
            else:
                score = quick_dice(predicted, select_labels)
            record["selection_dice"] = score
            if score > best["score"]:
                best = {"score": score, "epoch": epoch, "state": copy.deepcopy(network.state_dict())}
        history.append(record)
    network.load_state_dict(best["state"])
    return network, {"selected_epoch": best["epoch"], "selection_dice": best["score"], "history": history}


def train_and_evaluate(
    prepared_dir: str | Path,
    splits: dict,
    fold: int,
    variant: Variant,
    settings: dict,
    image_size: int,
    seed: int,
    synthetic_dir: str | Path | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Train the variant under each protocol in ``settings['protocols']`` and score the
    fold's real test cases. Returns per-case metrics (long table) and a training record."""
    data = SliceData(prepared_dir, synthetic_dir, variant.ratio)
    frames, record = [], {"variant": variant.__dict__, "seed": seed, "fold": fold, "protocols": {}}
    for protocol in settings["protocols"]:
        train_role, select_role = PROTOCOL_ROLES[protocol]
        train_rows = data.role_slices(splits, fold, train_role)
        select_rows = data.role_slices(splits, fold, select_role)
        started = time.time()
        pools = None
        if variant.augmentation in DIFFUSION_AUGMENTATIONS:
            missing = sorted(set(train_rows.slice_id) - set(data.pool))
            if missing:
                raise ValueError(f"no synthetic images for {len(missing)} training slices, e.g. {missing[:3]}")
            pools = [data.pool[s] for s in train_rows.slice_id]
        network, summary = fit(
            data.images(train_rows), data.images(select_rows), variant, settings, image_size, seed, protocol, pools
        )
        frame, skipped = score_cases(
            data, splits, fold, protocol, lambda rows, network=network: _predict_rows(network, data, rows)
        )
        if skipped:
            log.info(
                "%s protocol: %d test case(s) without positive slices are not scored: %s",
                protocol,
                len(skipped),
                skipped,
            )
        summary.update(
            {"train_slices": len(train_rows), "selection_slices": len(select_rows), "unscored_cases": skipped}
        )
        summary["wall_s"] = round(time.time() - started, 2)
        record["protocols"][protocol] = summary
        frame.insert(0, "protocol", protocol)
        frames.append(frame)
        log.info(
            "%s protocol: selected epoch %d, mean test Dice %.3f",
            protocol,
            summary["selected_epoch"],
            frame.dice.mean(),
        )
    metrics = pd.concat(frames, ignore_index=True)
    metrics.insert(0, "seed", seed)
    metrics.insert(0, "fold", fold)
    return metrics, record


def _segment(job: Job) -> None:
    settings = job.settings
    metrics, record = train_and_evaluate(
        job.inputs["prepared"],
        read_json(job.inputs["splits"]),
        job.number("fold"),
        Variant(**settings["variant"]),
        settings["settings"],
        settings["image_size"],
        job.number("seed"),
        job.inputs.get("synthetic"),
    )
    metrics.to_csv(job.outputs["metrics"], sep="\t", index=False)
    with open(job.outputs["record"], "w") as handle:
        json.dump(record, handle, indent=2)


SEGMENT = Stage(stages.SEGMENT, _segment)
segment_entry = SEGMENT.entry
