"""Does the generator follow its condition? Measured on the fold's development slices.

For the real slices, the fine-tuned generator's samples (image 1 of each slice, from the
main ratio's pool) and the samples of the same generator before fine-tuning (the random
initial weights of the demo model, or the pretrained base), drawn with the same sampler,
condition maps and noise:

- **contrast**: mean intensity inside the slice's mask minus the mean in a ring of
  ``RING_PX`` pixels around it (in [-1, 1] units). A sample that follows the mask in its
  condition map reproduces the real contrast (BUSI lesions are dark, spleen is bright);
  noise has none. Reported also as a fraction of the real contrast.
- **correlation**: Pearson correlation of each sample with the real slice it was
  conditioned on (1 for the real slices themselves).
- **nearest real**: the root-mean-square distance from each image to its nearest real
  development slice (for a real slice: the nearest *other* one), at most
  ``DISTANCE_SIDE`` px a side. A generator that memorises its training slices puts its
  samples much closer to them than real slices are to each other.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from medaug.diffboost import stages
from medaug.diffboost.generator import Sampler, sample_seed, vocabulary_texts
from medaug.diffboost.params import QUALITY_SOURCES
from medaug.diffboost.slices import development_slices, load_slices, load_synthetic_pool
from medaug.diffusion.models import build_tiny_components, load_pretrained_components
from medaug.diffusion.sampling import batched
from medaug.io import read_json, write_json
from medaug.stage import Job, Stage

log = logging.getLogger(__name__)

RING_PX = 3
# Slices measured per fold (evenly spread over the development slices): enough for a
# stable mean, few enough that sampling the untrained generator stays cheap.
QUALITY_SLICES = 64
# Side to which images shrink for the nearest-neighbour distance (memory at paper scale).
DISTANCE_SIDE = 64


def inside_ring_contrast(image: np.ndarray, mask: np.ndarray, ring_px: int = RING_PX) -> float:
    """Mean inside ``mask`` minus the mean of the ``ring_px``-pixel ring around it (NaN
    when either is empty)."""
    inside = mask > 0
    ring = ndimage.binary_dilation(inside, iterations=ring_px) & ~inside
    if not inside.any() or not ring.any():
        return float("nan")
    return float(image[inside].mean() - image[ring].mean())


def nearest_distance(queries: np.ndarray, references: np.ndarray, exclude_same: bool = False) -> np.ndarray:
    """RMS distance of each query image to its nearest reference image (images shrunk to
    at most ``DISTANCE_SIDE`` px a side); ``exclude_same``: queries are the references,
    and an image is not its own neighbour."""

    def flat(images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
        if x.shape[-1] > DISTANCE_SIDE:
            x = torch.nn.functional.interpolate(x, size=(DISTANCE_SIDE, DISTANCE_SIDE), mode="area")
        return x.flatten(1)

    q, r = flat(queries), flat(references)
    distances = torch.cdist(q, r) / np.sqrt(q.shape[1])
    if exclude_same:
        distances.fill_diagonal_(float("inf"))
    return distances.min(dim=1).values.numpy()


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def summarize(images: np.ndarray, masks: np.ndarray, sources: np.ndarray, real: np.ndarray) -> dict:
    """Mean contrast and correlation, and the median distance to the nearest of ``real``
    (the real development slices; ``images`` may be those very slices)."""
    contrast = [inside_ring_contrast(i, m) for i, m in zip(images, masks, strict=True)]
    corr = [correlation(i, s) for i, s in zip(images, sources, strict=True)]
    nearest = nearest_distance(images, real, exclude_same=images is real)
    return {
        "contrast": float(np.nanmean(contrast)),
        "correlation": float(np.nanmean(corr)),
        "nearest_real": float(np.median(nearest)),
    }


def _masks(prepared_dir: str | Path, rows: pd.DataFrame) -> np.ndarray:
    arrays = {case: np.load(Path(prepared_dir) / "arrays" / f"{case}.npz")["mask"] for case in rows.case_id.unique()}
    return np.stack([arrays[r.case_id][r.slice_index] > 0 for r in rows.itertuples()])


def untrained_components(finetune: dict) -> dict:
    """The generator as fine-tuning starts it: the same builder, settings and seed."""
    settings = finetune["settings"]
    if settings["pretrained_model"]:
        return load_pretrained_components(
            settings["pretrained_model"], settings["pretrained_controlnet"], "diffboost.controlnet.pretrained_model"
        )
    vocabulary = vocabulary_texts(finetune["prompts"], finetune["sampling"])
    return build_tiny_components(settings["tiny_model"], finetune["image_size"], vocabulary, finetune["seed"])


def generator_quality(
    prepared_dir: str | Path,
    conditions_dir: str | Path,
    splits: dict,
    fold: int,
    synthetic_dir: str | Path,
    finetune: dict,
    sampling: dict,
    out_json: str | Path,
    device: str | None = None,
) -> dict:
    """Contrast and correlation of real slices, fine-tuned samples and untrained samples."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows = development_slices(prepared_dir, splits, fold).reset_index(drop=True)
    picks = np.unique(np.linspace(0, len(rows) - 1, min(QUALITY_SLICES, len(rows))).round().astype(int))
    rows = rows.iloc[picks].reset_index(drop=True)
    images, conditions = load_slices(prepared_dir, conditions_dir, rows)
    masks = _masks(prepared_dir, rows)
    pool = load_synthetic_pool(synthetic_dir, 1)
    fine_tuned = np.stack([pool[slice_id][0] for slice_id in rows.slice_id])
    sampler = Sampler(
        untrained_components(finetune),
        {"prompt": finetune["prompt"], "image_size": finetune["image_size"]},
        sampling,
        device,
    )
    seeds = np.array([sample_seed(sampling, slice_id, 1) for slice_id in rows.slice_id])
    # Image 1 of each slice, as in the pool: same condition, phrase and noise.
    chunks = batched(len(rows), sampling["batch_size"])
    untrained = np.concatenate([sampler.sample(conditions[c], seeds[c].tolist(), [1] * len(c)) for c in chunks])
    result = {"fold": fold, "slices": len(rows), "ring_px": RING_PX}
    for source, sample in zip(QUALITY_SOURCES, (images, fine_tuned, untrained), strict=True):
        result[source] = summarize(sample, masks, images, images)
    real = result["real"]["contrast"]
    for source in QUALITY_SOURCES:
        result[source]["contrast_of_real"] = result[source]["contrast"] / real if real else float("nan")
    write_json(out_json, result)
    log.info(
        "contrast real %.3f, fine-tuned %.3f (%.0f%% of real), untrained %.3f; correlation fine-tuned %.2f",
        real,
        result["fine-tuned"]["contrast"],
        100 * result["fine-tuned"]["contrast_of_real"],
        result["untrained"]["contrast"],
        result["fine-tuned"]["correlation"],
    )
    return result


def _quality(job: Job) -> None:
    inputs = job.inputs
    generator_quality(
        inputs["prepared"],
        inputs["conditions"],
        read_json(inputs["splits"]),
        job.number("fold"),
        inputs["synthetic"],
        job.settings["finetune"],
        job.settings["sampling"],
        job.outputs["quality"],
    )


QUALITY = Stage(stages.QUALITY, _quality)
quality_entry = QUALITY.entry
