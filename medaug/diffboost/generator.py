"""DiffBoost's generator: a ControlNet conditioned on edge maps and a text prompt,
fine-tuned per fold on that fold's development slices, and the per-ratio sampler.

Models come from a local Stable Diffusion 1.5 (+ ControlNet) folder in diffusers layout
(latent space, ``local_files_only``) or, when none is configured, from a small randomly
initialised pixel-space model built from config (the demo). Both go through the same
training loop (:mod:`medaug.diffusion.training`) and DDIM sampler
(:mod:`medaug.diffusion.sampling`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from numpy.lib.format import open_memmap
from tqdm.auto import tqdm

from medaug.diffboost import stages
from medaug.diffboost.slices import (
    MANIFEST,
    SAMPLES,
    check_pool_layout,
    development_slices,
    load_slices,
    read_manifest,
    shard_path,
)
from medaug.diffusion.models import (
    MODEL_INFO,
    build_tiny_components,
    encode_text,
    from_model_space,
    load_model_folder,
    load_pretrained_components,
    model_space_size,
    to_model_space,
)
from medaug.errors import DatasetError, is_disk_full
from medaug.io import atomic_output, read_json, write_json
from medaug.seeds import keyed_rng, keyed_seed
from medaug.stage import Job, Stage

log = logging.getLogger(__name__)

PHRASES_FILE = Path(__file__).resolve().parent / "data" / "augmentation_phrases.txt"


def augmentation_phrases(path: str | Path | None = None) -> list[str]:
    lines = Path(path or PHRASES_FILE).read_text().splitlines()
    return [line.strip() for line in lines if line.strip()]


def _control(conditions: torch.Tensor, controlnet) -> torch.Tensor:
    return conditions.repeat(1, controlnet.config.conditioning_channels, 1, 1)


# --- data -----------------------------------------------------------------------------------


def epoch_order(n: int, batch_size: int, micro_step: int, seed: int, fold: int) -> np.ndarray:
    """The slice indices of one micro-batch when every epoch visits each slice once in its
    own random order (a shuffling DataLoader, as the official training); an epoch's tail
    continues into the next epoch's order so that every batch is full. Depends only on the
    step, so a resumed run draws the same batches."""
    positions = np.arange(micro_step * batch_size, (micro_step + 1) * batch_size)
    epochs = positions // n
    orders = {e: keyed_rng(seed, "finetune-order", fold, e).permutation(n) for e in np.unique(epochs)}
    return np.array([orders[e][p % n] for e, p in zip(epochs, positions, strict=True)])


def augment_pair(
    images: torch.Tensor, conditions: torch.Tensor, rng: np.random.Generator, degrees: float, zoom: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint random rotation (±degrees) and centre crop/zoom (factor in ``zoom``) of image
    and condition, in one resampling of the whole slice: the ranges are the official
    fine-tuning dataset's, but zooming in shows the real surroundings where the official
    code mirrors its crop (docs/replication.md, "ControlNet fine-tuning zoom")."""
    n = images.shape[0]
    angle = np.radians(rng.uniform(-degrees, degrees, n))
    factor = rng.uniform(zoom[0], zoom[1], n)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.from_numpy(np.cos(angle) * factor)
    theta[:, 0, 1] = torch.from_numpy(-np.sin(angle) * factor)
    theta[:, 1, 0] = torch.from_numpy(np.sin(angle) * factor)
    theta[:, 1, 1] = torch.from_numpy(np.cos(angle) * factor)
    grid = F.affine_grid(theta.float(), list(images.shape), align_corners=False)
    # Outside the field of view: the image mirrored, the condition empty (official: skimage
    # rotate with mode "symmetric" for the image, constant 0 for the edge map).
    moved = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return moved, F.grid_sample(conditions, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def write_conditions(prepared_dir: str | Path, out_dir: str | Path, settings: dict) -> dict:
    """Condition map of every slice: image edges (HED with ``settings['hed_weights']``, or
    Canny with ``canny_sigma`` and ``canny_thresholds``) plus the ground-truth mask contour.
    Writes ``<case>.npz`` (``condition``, float16 in [0, 1]) and ``meta.json`` recording the
    edge method actually used."""
    from medaug.diffboost.conditions import condition_maps

    prepared_dir = Path(prepared_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    hed_weights = settings["hed_weights"]
    cases = pd.read_csv(prepared_dir / "cases.tsv", sep="\t", dtype={"case_id": str}).case_id
    methods = set()
    with atomic_output(out_dir, directory=True) as tmp:
        for case_id in tqdm(cases, desc="condition maps", unit="case"):
            arrays = np.load(prepared_dir / "arrays" / f"{case_id}.npz")
            maps, method = condition_maps(
                arrays["image"],
                arrays["mask"],
                hed_weights=hed_weights,
                device=device,
                canny_sigma=settings["canny_sigma"],
                canny_thresholds=tuple(settings["canny_thresholds"]),
            )
            methods.add(method)
            np.savez_compressed(tmp / f"{case_id}.npz", condition=maps.astype(np.float16))
        meta = {"method": methods.pop() if len(methods) == 1 else sorted(methods), "hed_weights": hed_weights}
        write_json(tmp / "meta.json", meta)
    return meta


# --- fine-tuning ------------------------------------------------------------------------------


def vocabulary_texts(prompts: dict[str, str], sampling: dict) -> list[str]:
    return [
        *prompts.values(),
        sampling["prompt_suffix"],
        sampling["style_prompt"],
        sampling["negative_prompt"],
        *augmentation_phrases(sampling["augmentation_phrases_file"]),
    ]


# Keys that only say how long to train or how to checkpoint, not what is trained.
_STEP_KEYS = ("max_steps", "checkpointing_steps", "checkpoints_total_limit")


def _run_identity(settings, sampling, prompt, prompts, image_size, seed, rows, images, conditions) -> dict:
    """Every model setting and a digest of the training data (slice ids and pixels): a
    checkpoint resumes only the run these describe (:func:`medaug.diffusion.training.train`)."""
    data = hashlib.sha256()
    data.update(json.dumps([f"{r.case_id}:{r.slice_index}" for r in rows.itertuples()]).encode())
    for array in (images, conditions):
        data.update(np.ascontiguousarray(array).tobytes())
    return {
        "model": {key: value for key, value in settings.items() if key not in _STEP_KEYS},
        "sampling": sampling,
        "prompt": prompt,
        "prompts": prompts,
        "image_size": image_size,
        "seed": seed,
        "data": data.hexdigest()[:16],
    }


def finetune_controlnet(
    prepared_dir: str | Path,
    conditions_dir: str | Path,
    splits: dict,
    fold: int,
    prompt: str,
    prompts: dict[str, str],
    settings: dict,
    sampling: dict,
    image_size: int,
    epochs: int,
    seed: int,
    out_dir: str | Path,
    state_dir: str | Path,
    device: str | None = None,
) -> dict:
    """Fine-tune on the fold's development slices; resumable through ``state_dir``."""
    from medaug.diffusion.training import TrainingSettings, export_models, train

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows = development_slices(prepared_dir, splits, fold)
    images, conditions = load_slices(prepared_dir, conditions_dir, rows)
    if settings["pretrained_model"]:
        components = load_pretrained_components(
            settings["pretrained_model"], settings["pretrained_controlnet"], "diffboost.controlnet.pretrained_model"
        )
    else:
        components = build_tiny_components(
            settings["tiny_model"], image_size, vocabulary_texts(prompts, sampling), seed
        )
    unet, controlnet, vae = components["unet"], components["controlnet"], components["vae"]
    text_encoder, scheduler = components["text_encoder"].to(device), components["scheduler"]
    if vae is not None:
        vae.to(device).requires_grad_(False)
    prompt_embedding = encode_text(components["tokenizer"], text_encoder, [prompt], device)
    batch_size = settings["batch_size"]
    max_steps = settings["max_steps"] or math.ceil(epochs * len(rows) / batch_size)
    trainable = ["controlnet"] + (["unet"] if settings["train_unet"] else [])
    log.info(
        "fold %d: %d development slices, %d steps of batch %d, training %s",
        fold,
        len(rows),
        max_steps,
        batch_size,
        trainable,
    )

    def make_batch(micro_step: int) -> dict:
        rng = np.random.default_rng(keyed_seed(seed, "finetune", fold, micro_step))
        index = epoch_order(len(images), batch_size, micro_step, seed, fold)
        x, c = augment_pair(
            torch.from_numpy(images[index, None]),
            torch.from_numpy(conditions[index, None]),
            rng,
            settings["rotation_degrees"],
            tuple(settings["zoom_range"]),
        )
        g = torch.Generator().manual_seed(keyed_seed(seed, "noise", fold, micro_step))
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=g)
        return {"images": x, "conditions": c, "timesteps": timesteps, "generator": g}

    def loss_fn(models: dict, batch: dict) -> torch.Tensor:
        model_device = next(models["unet"].parameters()).device
        x = to_model_space(batch["images"].to(model_device), vae)
        noise = torch.randn(x.shape, generator=batch["generator"]).to(model_device)
        t = batch["timesteps"].to(model_device)
        noisy = scheduler.add_noise(x, noise, t)
        text = prompt_embedding.expand(len(x), -1, -1)
        down, mid = models["controlnet"](
            noisy,
            t,
            encoder_hidden_states=text,
            controlnet_cond=_control(batch["conditions"].to(model_device), controlnet),
            return_dict=False,
        )
        predicted = models["unet"](
            noisy,
            t,
            encoder_hidden_states=text,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        ).sample
        return F.mse_loss(predicted.float(), noise.float())

    training = TrainingSettings(
        max_steps=max_steps,
        learning_rate=settings["learning_rate"],
        weight_decay=settings["weight_decay"],
        gradient_accumulation_steps=settings["gradient_accumulation_steps"],
        mixed_precision=settings["mixed_precision"],
        ema_decay=settings["ema_decay"],
        lr_schedule=settings["lr_schedule"],
        checkpointing_steps=settings["checkpointing_steps"],
        checkpoints_total_limit=settings["checkpoints_total_limit"],
        seed=seed,
    )
    summary = train(
        {"unet": unet, "controlnet": controlnet},
        trainable,
        loss_fn,
        make_batch,
        training,
        state_dir,
        device,
        f"controlnet fold {fold}",
        identity=_run_identity(settings, sampling, prompt, prompts, image_size, seed, rows, images, conditions),
    )
    tiny = not settings["pretrained_model"]
    saved = ["controlnet"] + (["unet"] if settings["train_unet"] or tiny else [])
    with atomic_output(out_dir, directory=True) as tmp:
        export_models({"unet": unet, "controlnet": controlnet}, saved, tmp, state_dir)
        if tiny:
            text_encoder.save_pretrained(tmp / "text_encoder")
            components["tokenizer"].save_pretrained(tmp / "tokenizer")
            scheduler.save_pretrained(tmp / "scheduler")
        info = {
            "base": settings["pretrained_model"],
            "pixel_space": vae is None,
            "prompt": prompt,
            "image_size": image_size,
            "fold": fold,
            "train_slices": rows.slice_id.tolist(),
            "training": summary,
        }
        (tmp / MODEL_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return info


# --- sampling -------------------------------------------------------------------------------


class Sampler:
    """The official sampler of one model: DDIM with classifier-free guidance, the prompt
    mixed with an augmentation phrase and a style prompt, the slice's condition map in
    both guidance branches, its residuals scaled by ``control_strength``. ``info`` needs
    ``prompt`` and ``image_size``."""

    def __init__(self, components: dict, info: dict, sampling: dict, device: str):
        from diffusers import DDIMScheduler

        self.unet, self.controlnet, self.vae = (components[n] for n in ("unet", "controlnet", "vae"))
        for module in (self.unet, self.controlnet, self.vae, components["text_encoder"]):
            if module is not None:
                module.to(device).eval()
        self.scheduler = DDIMScheduler.from_config(components["scheduler"].config)
        self.sampling, self.device = sampling, device
        tokenizer, text_encoder = components["tokenizer"], components["text_encoder"]
        phrases = augmentation_phrases(sampling["augmentation_phrases_file"])
        self.phrase_count = len(phrases)
        self.main = encode_text(tokenizer, text_encoder, [f"{info['prompt']},{sampling['prompt_suffix']}"], device)
        self.style = encode_text(tokenizer, text_encoder, [sampling["style_prompt"]], device)
        self.phrases = encode_text(tokenizer, text_encoder, phrases, device)
        self.negative = encode_text(tokenizer, text_encoder, [sampling["negative_prompt"]], device)
        side = model_space_size(info["image_size"], self.vae)
        self.latent_shape = (self.unet.config.in_channels, side, side)

    def sample(self, conditions: np.ndarray, seeds: list[int], ks: list[int]) -> np.ndarray:
        """Images (N, H, W) for condition maps (N, H, W): image ``k`` of a slice uses phrase
        ``k - 1`` (cycled) and its noise comes from its seed."""
        from medaug.diffusion.sampling import ddim_sample

        weights = self.sampling["prompt_weights"]
        noise = torch.stack([torch.randn(self.latent_shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
        cond_text = (
            weights[0] * self.main
            + weights[1] * self.phrases[[(k - 1) % self.phrase_count for k in ks]]
            + weights[2] * self.style
        )
        text = torch.cat([self.negative.expand(len(seeds), -1, -1), cond_text])
        control = _control(torch.from_numpy(conditions[:, None]).to(self.device), self.controlnet)
        control = torch.cat([control, control])  # the official sampler keeps the control in both branches
        unet, controlnet = self.unet, self.controlnet
        strength = self.sampling["control_strength"]

        def eps_fn(x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            # Without guidance (guidance_scale <= 1) the sampler sends the conditional half only.
            n = len(x_in)
            down, mid = controlnet(
                x_in, t, encoder_hidden_states=text[-n:], controlnet_cond=control[-n:], return_dict=False
            )
            return unet(
                x_in,
                t,
                encoder_hidden_states=text[-n:],
                down_block_additional_residuals=[strength * d for d in down],
                mid_block_additional_residual=strength * mid,
            ).sample

        with torch.inference_mode():
            x0 = ddim_sample(
                eps_fn,
                tuple(noise.shape),
                self.scheduler,
                self.sampling["ddim_steps"],
                self.sampling["guidance_scale"],
                device=self.device,
                init=noise.to(self.device),
            )
            decoded = from_model_space(x0, self.vae)[:, 0].float().cpu()
        if decoded.shape[1:] != conditions.shape[1:]:
            decoded = F.interpolate(decoded[:, None], size=conditions.shape[1:], mode="bilinear")[:, 0]
        return decoded.numpy()


def sample_seed(sampling: dict, slice_id: str, k: int) -> int:
    """The noise seed of synthetic image ``k`` of a slice."""
    return keyed_seed(sampling["seed"], slice_id, k)


def link_shard(source: Path, target: Path) -> None:
    """``target`` as a hard link of ``source`` (same pixels, no copy, no second inode);
    a streamed copy where linking fails (another filesystem, or one without links)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def new_shard(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """An empty float16 shard mapped for writing, its disk blocks reserved first: a write
    through a map onto a full disk kills the process (SIGBUS, no clean-up), where the
    reservation fails with an ordinary "no space left" error."""
    shard = open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as file:
            try:
                os.posix_fallocate(file.fileno(), 0, os.fstat(file.fileno()).st_size)
            except OSError as exc:
                if is_disk_full(exc):
                    raise
                # A filesystem that cannot reserve space: write through the map unreserved.
    return shard


def sample_synthetic(
    model_dir: str | Path,
    prepared_dir: str | Path,
    conditions_dir: str | Path,
    splits: dict,
    fold: int,
    ratio: int,
    previous: str | Path | None,
    sampling: dict,
    out_dir: str | Path,
    device: str | None = None,
) -> pd.DataFrame:
    """Add images ``previous ratio + 1 .. ratio`` for every development slice of the fold
    (each conditioned on that slice's own condition map and inheriting its mask), and
    write every image up to ``ratio`` with its manifest: one shard per image index ``k``
    (:func:`~medaug.diffboost.slices.shard_path`), the previous ratio's shards as hard links."""
    from medaug.diffusion.sampling import batched

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out_dir = Path(out_dir)
    rows = development_slices(prepared_dir, splits, fold)
    _, conditions = load_slices(prepared_dir, conditions_dir, rows)
    shard_shape = conditions.shape
    manifest = pd.DataFrame()
    if previous:
        check_pool_layout(previous)
        manifest = read_manifest(previous)
        _check_previous_rows(previous, manifest, rows, shard_shape)
    start = int(manifest.k.max()) if len(manifest) else 0
    if start >= ratio:
        raise ValueError(f"previous ratio {start} is not below {ratio}")
    components, info = load_model_folder(model_dir)
    sampler = Sampler(components, info, sampling, device)
    # k-major: each shard fills up before the next one opens, so at most the shards of one
    # batch are open at a time.
    jobs = [(i, k) for k in range(start + 1, ratio + 1) for i in range(len(rows))]
    records = []
    with atomic_output(out_dir, directory=True) as tmp:
        # The folder holds every image up to this ratio, so that it alone is what later jobs
        # read; the previous ratio's images come in as links, neither copied nor loaded.
        (tmp / SAMPLES).mkdir()
        for k in range(1, start + 1):
            link_shard(shard_path(previous, k), shard_path(tmp, k))
        open_shards: dict[int, np.memmap] = {}
        for chunk in tqdm(
            batched(len(jobs), sampling["batch_size"]), desc=f"sample fold {fold} ratio {ratio}", unit="batch"
        ):
            batch = [jobs[j] for j in chunk]
            seeds = [sample_seed(sampling, rows.slice_id[i], k) for i, k in batch]
            decoded = sampler.sample(conditions[[i for i, _ in batch]], seeds, [k for _, k in batch])
            for image, (i, k), s in zip(decoded, batch, seeds, strict=True):
                if k not in open_shards:
                    open_shards[k] = new_shard(shard_path(tmp, k), shard_shape)
                open_shards[k][i] = image
                if i == len(rows) - 1:  # the shard's last row: write it out and let go of its pages
                    open_shards.pop(k).flush()
                row = rows.iloc[i]
                records.append(
                    {
                        "synthetic_id": f"{row.slice_id}_syn{k:03d}",
                        "source_slice_id": row.slice_id,
                        "case_id": row.case_id,
                        "patient_id": row.patient_id,
                        "fold": fold,
                        "k": k,
                        "seed": s,
                        "index": i,
                    }
                )
        manifest = pd.concat([manifest, pd.DataFrame(records)], ignore_index=True).sort_values(["source_slice_id", "k"])
        counts = manifest.groupby("source_slice_id").size()
        manifest.to_csv(tmp / MANIFEST, sep="\t", index=False)
        write_json(
            tmp / "counts.json",
            {
                "fold": fold,
                "ratio": ratio,
                "source_slices": len(rows),
                "synthetic_images": len(manifest),
                "new_images": len(records),
                "reused_images": len(manifest) - len(records),
                "per_slice_min": int(counts.min()),
                "per_slice_max": int(counts.max()),
                "condition_method": json.loads((Path(conditions_dir) / "meta.json").read_text())["method"],
            },
        )
    return manifest


def _check_previous_rows(previous: str | Path, manifest: pd.DataFrame, rows: pd.DataFrame, shape: tuple) -> None:
    """The previous ratio's shards are linked in as they are: their rows must be this fold's
    development slices in this order, at this size."""
    position = pd.Series(range(len(rows)), index=rows.slice_id)
    expected = position.reindex(manifest.source_slice_id).to_numpy()
    if len(manifest) and not np.array_equal(expected, manifest["index"].to_numpy()):
        raise DatasetError(previous, "its shard rows are not this fold's development slices; delete it and resample")
    for k in sorted(set(manifest.k)):
        shard_shape = np.load(shard_path(previous, k), mmap_mode="r").shape
        if shard_shape != shape:
            raise DatasetError(shard_path(previous, k), f"shape {shard_shape}, expected {shape}")


# --- stages ---------------------------------------------------------------------------------------


def _conditions(job: Job) -> None:
    write_conditions(job.inputs["prepared"], job.outputs["conditions"], job.settings)


def _finetune(job: Job) -> None:
    settings = dict(job.settings)
    state_dir = settings.pop("state_dir")
    inputs = job.inputs
    splits = read_json(inputs["splits"])
    finetune_controlnet(
        inputs["prepared"],
        inputs["conditions"],
        splits,
        job.number("fold"),
        out_dir=job.outputs["model"],
        state_dir=state_dir,
        **settings,
    )


def _sample(job: Job) -> None:
    inputs = job.inputs
    sample_synthetic(
        inputs["model"],
        inputs["prepared"],
        inputs["conditions"],
        read_json(inputs["splits"]),
        job.number("fold"),
        job.number("ratio"),
        inputs.get("previous"),
        job.settings,
        job.outputs["synthetic"],
    )


CONDITIONS = Stage(stages.CONDITIONS, _conditions)
FINETUNE = Stage(stages.FINETUNE, _finetune)
SAMPLE = Stage(stages.SAMPLE, _sample)
conditions_entry, finetune_entry, sample_entry = CONDITIONS.entry, FINETUNE.entry, SAMPLE.entry
