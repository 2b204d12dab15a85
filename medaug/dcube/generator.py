"""D-Cube step 1 and what reads its model: the class-conditional U-ViT trained with the
mid-feature contrastive loss (spec §3.3), the choice of hyper-feature blocks by p-value, and
class-balanced synthesis (spec §3.5).

Step 1 runs on the shared training loop (:func:`medaug.diffusion.training.train`):
resumable, checkpointed, fp32 on CPU and autocast on CUDA. As the official
``main_step1.py``: each anchor image gets a partner of its own class with probability 0.5
(else of another class), drawn uniformly among the matching training images; both are
noised with the same noise at the same ``t ~ U{1, ..., T-1}``; the loss is summed over the
batch of ``contrastive + |eps - eps1|^2 + |eps - eps2|^2`` (squared errors summed over
pixels); AdamW with PyTorch's default weight decay 0.01, no EMA, no gradient clipping.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import numpy as np
import torch

from medaug.dcube import data, stages
from medaug.io import atomic_output, read_json, write_json
from medaug.seeds import keyed_seed
from medaug.stage import Job, Stage

log = logging.getLogger(__name__)

MODEL_DIR = "unet"
META = "meta.json"


# --- step 1: the contrastive U-ViT ------------------------------------------------------------------


def contrastive_loss(first: torch.Tensor, second: torch.Tensor, different: torch.Tensor, margin: float) -> torch.Tensor:
    """Per-pair margin contrastive loss on flattened features: the squared distance ``D`` for
    same-class pairs, ``max(0, margin - D)`` for pairs of different classes (official
    ``contrastive_loss``: squared L2, no normalisation)."""
    distance = (first.flatten(1) - second.flatten(1)).pow(2).sum(1)
    different = different.to(distance.dtype)
    return (1.0 - different) * distance + different * torch.clamp(margin - distance, min=0.0)


def draw_partners(labels: np.ndarray, anchors: np.ndarray, same_probability: float, rng) -> np.ndarray:
    """A partner index per anchor: with ``same_probability`` uniformly among the images of
    the anchor's class (itself included, as the official rejection sampler), else among the
    other classes' images (its own class when there is no other)."""
    partners = np.empty(len(anchors), dtype=np.int64)
    for position, anchor in enumerate(anchors):
        same = rng.random() < same_probability
        pool = np.flatnonzero((labels == labels[anchor]) == same)
        if pool.size == 0:
            pool = np.flatnonzero(labels == labels[anchor])
        partners[position] = rng.choice(pool)
    return partners


def steps_per_epoch(count: int, batch_size: int) -> int:
    return math.ceil(count / batch_size)  # the official loader keeps the last, smaller batch


class PairBatches:
    """``make_batch(i)`` of the training loop: epoch-wise shuffled anchors, their partners,
    one ``t`` and one noise per pair; deterministic in the micro-step ``i``."""

    def __init__(self, images: data.Images, settings: dict, seed: int):
        self.images = torch.from_numpy(images.images[:, None])
        self.labels = images.labels
        self.batch_size = settings["batch_size"]
        self.per_epoch = steps_per_epoch(len(images), self.batch_size)
        self.same_probability = settings["same_class_probability"]
        self.timesteps = settings["schedule"]["num_train_timesteps"]
        self.seed = seed

    def __call__(self, step: int) -> dict:
        epoch, index = divmod(step, self.per_epoch)
        order = np.random.default_rng(keyed_seed(self.seed, "epoch", epoch)).permutation(len(self.labels))
        anchors = order[index * self.batch_size : (index + 1) * self.batch_size]
        rng = np.random.default_rng(keyed_seed(self.seed, "pairs", step))
        partners = draw_partners(self.labels, anchors, self.same_probability, rng)
        generator = torch.Generator().manual_seed(keyed_seed(self.seed, "noise", step))
        timesteps = torch.randint(1, self.timesteps, (len(anchors),), generator=generator)
        noise = torch.randn((len(anchors), *self.images.shape[1:]), generator=generator)
        return {
            "first": self.images[anchors],
            "second": self.images[partners],
            "first_label": torch.from_numpy(self.labels[anchors]),
            "second_label": torch.from_numpy(self.labels[partners]),
            "timesteps": timesteps,
            "noise": noise,
        }


def step1_loss(alpha_bars: torch.Tensor, margin: float):
    def loss_fn(models: dict, batch: dict) -> torch.Tensor:
        model = models[MODEL_DIR]
        t = batch["timesteps"]
        scale = alpha_bars.to(t.device)[t].float()[:, None, None, None]
        noisy = [scale.sqrt() * batch[key] + (1.0 - scale).sqrt() * batch["noise"] for key in ("first", "second")]
        eps1, mid1 = model(noisy[0], t, batch["first_label"], return_mid=True)
        eps2, mid2 = model(noisy[1], t, batch["second_label"], return_mid=True)
        different = batch["first_label"] != batch["second_label"]
        contrastive = contrastive_loss(mid1.float(), mid2.float(), different, margin)
        squared = [(eps.float() - batch["noise"]).pow(2).flatten(1).sum(1) for eps in (eps1, eps2)]
        return (contrastive + squared[0] + squared[1]).sum()

    return loss_fn


def build_uvit(settings: dict, image_size: int, num_classes: int):
    from medaug.dcube.uvit import UViT

    return UViT(image_size=image_size, num_classes=num_classes, **settings["model"])


def alpha_bars_of(schedule: dict) -> torch.Tensor:
    from medaug.diffusion.sampling import linear_betas

    betas = linear_betas(schedule["num_train_timesteps"], schedule["beta_start"], schedule["beta_end"])
    return torch.cumprod(1.0 - betas, 0)


def _digest(images: data.Images) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(images.images).tobytes())
    digest.update(np.ascontiguousarray(images.labels).tobytes())
    return digest.hexdigest()[:16]


def train_generator(job: Job) -> dict:
    from medaug.diffusion.training import TrainingSettings, export_models, train

    settings = job.settings
    prepared, splits = job.inputs["prepared"], read_json(job.inputs["splits"])
    images = data.role_images(prepared, splits, "train", job.wildcards["scenario"], settings["minority_class"])
    classes = data.classes(prepared)
    per_epoch = steps_per_epoch(len(images), settings["batch_size"])
    training = TrainingSettings(
        max_steps=settings["epochs"] * per_epoch,
        learning_rate=settings["learning_rate"],
        weight_decay=settings["weight_decay"],
        mixed_precision=settings["mixed_precision"],
        ema_decay=settings["ema_decay"],
        max_grad_norm=None,
        checkpointing_steps=settings["checkpointing_epochs"] * per_epoch,
        seed=settings["seed"],
    )
    torch.manual_seed(settings["seed"])  # the initial weights (a fresh process's torch RNG is not fixed)
    model = build_uvit(settings, settings["image_size"], len(classes))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    log.info(
        "step 1 on %d training images (%s), %d epochs of %d steps",
        len(images),
        ", ".join(f"{name} {int((images.labels == i).sum())}" for i, name in enumerate(classes)),
        settings["epochs"],
        per_epoch,
    )
    identity = {"model": settings["model"], "schedule": settings["schedule"], "data": _digest(images)}
    identity |= {key: settings[key] for key in ("contrastive_margin", "same_class_probability", "batch_size")}
    summary = train(
        {MODEL_DIR: model},
        [MODEL_DIR],
        step1_loss(alpha_bars_of(settings["schedule"]), settings["contrastive_margin"]),
        PairBatches(images, settings, settings["seed"]),
        training,
        settings["state_dir"],
        device=device,
        progress_desc=f"step 1 {job.wildcards['dataset']} {job.wildcards['scenario']}",
        identity=identity,
    )
    with atomic_output(job.outputs["model"], directory=True) as tmp:
        export_models({MODEL_DIR: model}, [MODEL_DIR], tmp, settings["state_dir"])
        write_json(
            tmp / META,
            {
                "classes": classes,
                "image_size": settings["image_size"],
                "schedule": settings["schedule"],
                "scenario": job.wildcards["scenario"],
                "training_case_ids": images.case_ids,
                "training": summary,
            },
        )
    return summary


def load_generator(folder: str | Path, device: str | torch.device = "cpu"):
    """The exported U-ViT (eval mode, on ``device``) and its meta record."""
    from medaug.dcube.uvit import UViT

    folder = Path(folder)
    return UViT.from_pretrained(folder / MODEL_DIR).to(device), read_json(folder / META)


# --- block selection by p-value -------------------------------------------------------------------


def block_features(model, images: np.ndarray, timesteps: int, seed: int, batch_size: int = 64) -> list[np.ndarray]:
    """Per block, each image's token-mean of the LayerNormed block output (N, dim), at a
    seeded random ``t`` and without the class embedding, as the classifier sees them."""
    generator = torch.Generator().manual_seed(keyed_seed(seed, "block-selection"))
    timesteps = torch.randint(1, timesteps, (len(images),), generator=generator)
    per_block: list[list[np.ndarray]] = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start : start + batch_size, None])
            outputs = model(x, timesteps[start : start + batch_size], None, return_blocks=True)
            for index, output in enumerate(outputs):
                normed = torch.nn.functional.layer_norm(output.float(), output.shape[-1:])
                if len(per_block) <= index:
                    per_block.append([])
                per_block[index].append(normed.mean(1).numpy())
    return [np.concatenate(chunks) for chunks in per_block]


def block_statistics(features: list[np.ndarray], labels: np.ndarray) -> list[dict]:
    """Per block, a one-way ANOVA per feature across classes: the median p-value and the
    share of features with p < 0.05."""
    from scipy.stats import f_oneway

    rows = []
    groups = [labels == label for label in np.unique(labels)]
    for index, feature in enumerate(features):
        usable = [feature[mask] for mask in groups if mask.sum() >= 2]
        if len(usable) < 2:
            p_values = np.ones(feature.shape[1])
        else:
            p_values = np.nan_to_num(f_oneway(*usable, axis=0).pvalue, nan=1.0)
        rows.append(
            {
                "block": index,
                "median_p": float(np.median(p_values)),
                "share_p_below_0.05": float((p_values < 0.05).mean()),
            }
        )
    return rows


def select_blocks(job: Job) -> dict:
    settings = job.settings
    prepared, splits = job.inputs["prepared"], read_json(job.inputs["splits"])
    images = data.role_images(prepared, splits, "train", job.wildcards["scenario"], settings["minority_class"])
    model, _ = load_generator(job.inputs["model"])
    statistics = block_statistics(
        block_features(model, images.images, settings["num_train_timesteps"], settings["seed"]), images.labels
    )
    ranked = sorted(statistics, key=lambda row: (row["median_p"], row["block"]))
    by_p_value = sorted(row["block"] for row in ranked[: settings["count"]])
    configured = settings["use"]
    if configured is not None and max(configured) >= model.num_blocks:
        raise ValueError(f"dcube.blocks.use {configured}: the U-ViT has blocks 0..{model.num_blocks - 1} only")
    record = {
        "chosen": sorted(configured) if configured is not None else by_p_value,
        "source": "dcube.blocks.use" if configured is not None else "p-value",
        "by_p_value": by_p_value,
        "mid_block": model.mid_index,
        "training_images": len(images),
        "statistics": statistics,
    }
    log.info("blocks %s (%s); by p-value %s", record["chosen"], record["source"], by_p_value)
    write_json(job.outputs["blocks"], record)
    return record


# --- class-balanced synthesis ---------------------------------------------------------------------


def sample_images(model, settings: dict, count: int, num_classes: int, seed: int, device) -> tuple:
    """``count`` images in [-1, 1] and their classes: class ``i mod C`` for image ``i`` (an
    exactly balanced set; the official sampler draws classes uniformly at random)."""
    from medaug.diffusion.sampling import ancestral_sample, batched, ddim_sample, linear_betas

    schedule = settings["schedule"]
    labels = np.arange(count) % num_classes
    size = model.config.image_size
    chunks = []
    for number, indices in enumerate(batched(count, settings["batch_size"])):
        classes = torch.from_numpy(labels[indices.start : indices.stop]).to(device)
        generator = torch.Generator().manual_seed(keyed_seed(seed, "dcube-sample", number))
        shape = (len(classes), 1, size, size)

        def eps_fn(x, t, classes=classes):
            timesteps = t.expand(len(x)) if t.ndim == 0 else t
            return model(x, timesteps.to(device), classes)

        if settings["sampler"] == "ddpm":
            betas = linear_betas(schedule["num_train_timesteps"], schedule["beta_start"], schedule["beta_end"])
            x = ancestral_sample(eps_fn, shape, betas, generator, device)
        else:
            from diffusers import DDIMScheduler

            scheduler = DDIMScheduler(
                num_train_timesteps=schedule["num_train_timesteps"],
                beta_start=schedule["beta_start"],
                beta_end=schedule["beta_end"],
                beta_schedule="linear",
                clip_sample=False,
                # t = 0 is never trained (t ~ U{1..T-1}, as the official code): end at t = 1.
                steps_offset=1,
            )
            x = ddim_sample(
                eps_fn,
                shape,
                scheduler,
                settings["ddim_steps"],
                generator=generator,
                device=device,
                eta=settings["ddim_eta"],
            )
            x = x.clamp(-1.0, 1.0)
        chunks.append(x[:, 0].float().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, size, size), np.float32), labels


def synthesize(job: Job) -> dict:
    import pandas as pd

    settings = job.settings
    count = job.number("synthetic_count")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, meta = load_generator(job.inputs["model"], device)
    classes = meta["classes"]
    seed = keyed_seed(settings["seed"], job.wildcards["dataset"], job.wildcards["scenario"], count)
    images, labels = sample_images(model, settings, count, len(classes), seed, device)
    manifest = pd.DataFrame(
        {
            "id": [f"syn_{i}th_{classes[label]}" for i, label in enumerate(labels)],
            "label": [classes[label] for label in labels],
            "label_index": labels,
            "sampler": settings["sampler"],
            "steps": settings["ddim_steps"]
            if settings["sampler"] == "ddim"
            else settings["schedule"]["num_train_timesteps"] - 1,
            "seed": seed,
            "batch": np.arange(count) // settings["batch_size"],
        }
    )
    counts = {name: int((labels == i).sum()) for i, name in enumerate(classes)}
    with atomic_output(job.outputs["synthetic"], directory=True) as tmp:
        np.savez_compressed(tmp / data.SYNTHETIC_IMAGES, image=data.to_uint8(images))
        manifest.to_csv(tmp / data.SYNTHETIC_MANIFEST, sep="\t", index=False)
        write_json(tmp / "counts.json", {"count": count, "per_class": counts, "sampler": settings["sampler"]})
    log.info("sampled %d images: %s", count, counts)
    return counts


GENERATOR = Stage(stages.GENERATOR, train_generator)
BLOCKS = Stage(stages.BLOCKS, select_blocks)
SYNTHESIS = Stage(stages.SYNTHESIS, synthesize)
generator_entry, blocks_entry, synthesis_entry = GENERATOR.entry, BLOCKS.entry, SYNTHESIS.entry
