"""Does the generator follow its condition? Measured on (up to ``QUALITY_SLICES``) training
slices of the fold.

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
- **FID / KID** of half of each source's images against the other half of the real slices
  (so "real" gives the real-to-real floor), on the features of ``fid_extractor`` or, without
  one, of the bottleneck of the segmenter trained on the real slices below.
- **segmenter Dice**: the baseline segmenter trained on each source's images with the real
  masks (synthetic only, for the generators), selected on the real validation slices, scored
  by the mean Dice on the real positive test slices.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from medaug.diffboost import stages
from medaug.diffboost.generator import Sampler, sample_seed, vocabulary_texts
from medaug.diffboost.params import QUALITY_SOURCES
from medaug.diffboost.segmenter import Variant, fit, predict, quick_dice
from medaug.diffboost.slices import SliceData, load_slices, load_synthetic_pool
from medaug.diffusion.models import build_tiny_components, load_pretrained_components
from medaug.diffusion.sampling import batched
from medaug.io import read_json, write_json
from medaug.metrics.image_quality import BottleneckExtractor, InceptionExtractor, frechet_distance, kernel_distance
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


def untrained_components(finetune: dict) -> dict:
    """The generator as fine-tuning starts it: the same builder, settings and seed."""
    settings = finetune["settings"]
    if settings["pretrained_model"]:
        return load_pretrained_components(
            settings["pretrained_model"], settings["pretrained_controlnet"], "diffboost.controlnet.pretrained_model"
        )
    vocabulary = vocabulary_texts(finetune["prompts"], finetune["sampling"])
    return build_tiny_components(settings["tiny_model"], finetune["image_size"], vocabulary, finetune["seed"])


def _halves(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Alternate positions of the (evenly spread) picks: two halves that cover the same
    range of slices."""
    positions = np.arange(count)
    return positions[0::2], positions[1::2]


def image_distances(sources: dict[str, np.ndarray], extractor) -> dict[str, dict]:
    """FID and KID of half A of each source's images against half B of the real images:
    for "real" that is real-to-real, the floor a perfect generator would reach. NaN when a
    half holds fewer than two images."""
    half_a, half_b = _halves(len(sources["real"]))
    if len(half_b) < 2:
        log.warning("FID/KID need at least 4 training slices, the fold has %d: not computed", len(sources["real"]))
        return {source: {"fid": float("nan"), "kid": float("nan"), "kid_std": float("nan")} for source in sources}
    reference = extractor(sources["real"][half_b])
    out = {}
    for source, images in sources.items():
        features = extractor(images[half_a])
        kid, kid_std = kernel_distance(features, reference)
        out[source] = {"fid": frechet_distance(features, reference), "kid": kid, "kid_std": kid_std}
    return out


def segmenters_per_source(
    sources: dict[str, np.ndarray],
    masks: np.ndarray,
    data: SliceData,
    splits: dict,
    fold: int,
    segmenter: dict,
    seed: int,
    device: str | None = None,
) -> tuple[dict[str, float], dict[str, torch.nn.Module]]:
    """One baseline segmenter per image source, trained on that source's images with the real
    masks (the synthetic-only segmenter, for the generators), selected on the real
    validation slices and scored by the mean Dice on the real positive test slices."""
    variant = Variant(**{**segmenter["variant"], "augmentation": "none", "ratio": 0})
    select = data.images(data.role_slices(splits, fold, "val"))
    test_images, test_labels = data.images(data.role_slices(splits, fold, "test"))
    dice, networks = {}, {}
    for source, images in sources.items():
        network, _ = fit(
            (images, masks.astype(np.int64)),
            select,
            variant,
            segmenter["settings"],
            segmenter["image_size"],
            seed,
            "clean",
            device=device,
        )
        dice[source] = quick_dice(predict(network, test_images), test_labels)
        networks[source] = network
    return dice, networks


def generator_quality(
    prepared_dir: str | Path,
    conditions_dir: str | Path,
    splits: dict,
    fold: int,
    synthetic_dir: str | Path,
    settings: dict,
    out_json: str | Path,
    device: str | None = None,
) -> dict:
    """Real slices, fine-tuned samples and untrained samples of the fold's training slices:
    contrast, correlation, nearest real slice, FID/KID and synthetic-only segmenter Dice."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    finetune, sampling = settings["finetune"], settings["sampling"]
    data = SliceData(prepared_dir)
    # Training slices only: the validation slices select the segmenters, the test slices score them.
    rows = data.role_slices(splits, fold, "train")
    picks = np.unique(np.linspace(0, len(rows) - 1, min(QUALITY_SLICES, len(rows))).round().astype(int))
    rows = rows.iloc[picks].reset_index(drop=True)
    images, masks = data.images(rows)
    _, conditions = load_slices(prepared_dir, conditions_dir, rows)
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
    sources = dict(zip(QUALITY_SOURCES, (images, fine_tuned, untrained), strict=True))

    result = {"fold": fold, "slices": len(rows), "ring_px": RING_PX}
    for source, sample in sources.items():
        result[source] = summarize(sample, masks, images, images)
    real = result["real"]["contrast"]
    for source in QUALITY_SOURCES:
        result[source]["contrast_of_real"] = result[source]["contrast"] / real if real else float("nan")

    dice, networks = segmenters_per_source(
        sources, masks, data, splits, fold, settings["segmenter"], finetune["seed"], device
    )
    if settings["fid_extractor"]:
        extractor = InceptionExtractor(settings["fid_extractor"], device)
    else:
        extractor = BottleneckExtractor(networks["real"], settings["segmenter"]["image_size"])
    result["fid_features"] = extractor.label
    for source, distances in image_distances(sources, extractor).items():
        result[source].update(distances, segmenter_dice=dice[source])
    write_json(out_json, result)
    log.info(
        "contrast real %.3f, fine-tuned %.3f (%.0f%% of real), untrained %.3f; correlation fine-tuned %.2f; "
        "segmenter Dice real %.3f, fine-tuned %.3f, untrained %.3f; %s fine-tuned %.3g (real-to-real %.3g)",
        real,
        result["fine-tuned"]["contrast"],
        100 * result["fine-tuned"]["contrast_of_real"],
        result["untrained"]["contrast"],
        result["fine-tuned"]["correlation"],
        dice["real"],
        dice["fine-tuned"],
        dice["untrained"],
        "FID" if isinstance(extractor, InceptionExtractor) else "feature FD",
        result["fine-tuned"]["fid"],
        result["real"]["fid"],
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
        job.settings,
        job.outputs["quality"],
    )


QUALITY = Stage(stages.QUALITY, _quality)
quality_entry = QUALITY.entry
