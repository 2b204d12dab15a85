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
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from medaug.io import atomic_output, write_json
from medaug.slices import load_slices
from medaug.splits import LeakageError, role_cases

log = logging.getLogger(__name__)

PHRASES_FILE = Path(__file__).parent / "data" / "augmentation_phrases.txt"
MODEL_INFO = "medaug_model.json"
COMPONENTS = ("unet", "controlnet", "text_encoder", "tokenizer", "scheduler", "vae")


def stream_seed(*keys: object) -> int:
    """A 63-bit seed that depends only on ``keys`` (so each image has its own stream)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, keys)).encode()).digest()[:8], "little") >> 1


def augmentation_phrases(path: str | Path | None = None) -> list[str]:
    lines = Path(path or PHRASES_FILE).read_text().splitlines()
    return [line.strip() for line in lines if line.strip()]


# --- models -------------------------------------------------------------------------------


def tiny_tokenizer(texts: list[str], max_length: int = 32):
    """A word-level CLIP-style tokenizer built in memory from the texts it must encode
    (no hub access); saved and reloaded with save_pretrained / AutoTokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    splitter = pre_tokenizers.Whitespace()
    words = sorted({w for text in texts for w, _ in splitter.pre_tokenize_str(text.lower())})
    vocab = {token: i for i, token in enumerate(specials + words)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = splitter
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


def build_tiny_components(tiny: dict, image_size: int, texts: list[str], seed: int) -> dict:
    """Random pixel-space UNet + ControlNet + small CLIP text encoder, attention only at
    the lowest resolution (the CPU-speed lever measured in stack-notes §4)."""
    from diffusers import ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(texts)
    width = tiny["text_hidden_size"]
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=tiny["text_layers"],
            num_attention_heads=max(1, width // 8),
            max_position_embeddings=tokenizer.model_max_length,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    levels = len(tiny["block_out_channels"])
    unet = UNet2DConditionModel(
        sample_size=image_size,
        in_channels=1,
        out_channels=1,
        block_out_channels=tuple(tiny["block_out_channels"]),
        layers_per_block=tiny["layers_per_block"],
        down_block_types=("DownBlock2D",) * (levels - 1) + ("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1),
        cross_attention_dim=width,
        attention_head_dim=tiny["attention_head_dim"],
        norm_num_groups=tiny["norm_num_groups"],
    )
    # Pixel space: the control image enters at full resolution, one conditioning level.
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16,), conditioning_channels=1)
    return {
        "unet": unet,
        "controlnet": controlnet,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": DDPMScheduler(num_train_timesteps=1000),
        "vae": None,
    }


def load_pretrained_components(pretrained_model: str, pretrained_controlnet: str | None) -> dict:
    """Stable Diffusion 1.5 (+ ControlNet) from local diffusers folders, never a hub id."""
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    base = Path(pretrained_model)
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: diffboost.controlnet.pretrained_model is not a folder")
    kwargs = {"local_files_only": True}
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", **kwargs)
    if pretrained_controlnet:
        controlnet = ControlNetModel.from_pretrained(pretrained_controlnet, **kwargs)
    else:
        controlnet = ControlNetModel.from_unet(unet)
    return {
        "unet": unet,
        "controlnet": controlnet,
        "text_encoder": CLIPTextModel.from_pretrained(base, subfolder="text_encoder", **kwargs),
        "tokenizer": AutoTokenizer.from_pretrained(base, subfolder="tokenizer", **kwargs),
        "scheduler": DDPMScheduler.from_pretrained(base, subfolder="scheduler", **kwargs),
        "vae": AutoencoderKL.from_pretrained(base, subfolder="vae", **kwargs),
    }


def load_model_folder(model_dir: str | Path) -> tuple[dict, dict]:
    """Components of a fine-tuned model: what the folder holds, the rest from its base."""
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    model_dir = Path(model_dir)
    info = json.loads((model_dir / MODEL_INFO).read_text())
    loaders = {
        "unet": UNet2DConditionModel,
        "controlnet": ControlNetModel,
        "text_encoder": CLIPTextModel,
        "tokenizer": AutoTokenizer,
        "scheduler": DDPMScheduler,
        "vae": AutoencoderKL,
    }
    components = {}
    for name, loader in loaders.items():
        if (model_dir / name).is_dir():
            components[name] = loader.from_pretrained(model_dir / name, local_files_only=True)
        elif info["base"] and (Path(info["base"]) / name).is_dir():
            components[name] = loader.from_pretrained(info["base"], subfolder=name, local_files_only=True)
        else:
            components[name] = None
    return components, info


@torch.no_grad()
def encode_text(tokenizer, text_encoder, texts: list[str], device) -> torch.Tensor:
    tokens = tokenizer(
        texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    return text_encoder(tokens.input_ids.to(device))[0]


def _to_model_space(images: torch.Tensor, vae) -> torch.Tensor:
    """(B,1,H,W) images in [-1,1] -> what the UNet denoises (latents with a VAE)."""
    if vae is None:
        return images
    latents = vae.encode(images.repeat(1, vae.config.in_channels, 1, 1)).latent_dist.sample()
    return latents * vae.config.scaling_factor


def _from_model_space(x: torch.Tensor, vae) -> torch.Tensor:
    if vae is None:
        return x.clamp(-1, 1)
    decoded = vae.decode(x / vae.config.scaling_factor).sample
    return decoded[:, :1].clamp(-1, 1)  # the official sampler keeps channel 0


def _control(conditions: torch.Tensor, controlnet) -> torch.Tensor:
    return conditions.repeat(1, controlnet.config.conditioning_channels, 1, 1)


# --- data -----------------------------------------------------------------------------------


def development_slices(prepared_dir: str | Path, splits: dict, fold: int) -> pd.DataFrame:
    """The positive slices of the fold's development cases: the only slices the generator
    ever trains on or is conditioned on. Raises LeakageError if a test case slips in."""
    slices = pd.read_csv(Path(prepared_dir) / "slices.tsv", sep="\t", dtype={"case_id": str, "patient_id": str})
    development = role_cases(splits, fold, "development")
    chosen = slices[slices.case_id.isin(development) & slices.positive].reset_index(drop=True)
    test_patients = set(slices.patient_id[slices.case_id.isin(role_cases(splits, fold, "test"))])
    if test_patients & set(chosen.patient_id):
        raise LeakageError(f"fold {fold}: generator input contains test patients {sorted(test_patients)[:5]}")
    return chosen


def augment_pair(
    images: torch.Tensor, conditions: torch.Tensor, rng: np.random.Generator, degrees: float, zoom: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint random rotation (±degrees) and centre crop/zoom (factor in ``zoom``) of image
    and condition, as the official fine-tuning dataset does."""
    n = images.shape[0]
    angle = np.radians(rng.uniform(-degrees, degrees, n))
    factor = rng.uniform(zoom[0], zoom[1], n)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.from_numpy(np.cos(angle) * factor)
    theta[:, 0, 1] = torch.from_numpy(-np.sin(angle) * factor)
    theta[:, 1, 0] = torch.from_numpy(np.sin(angle) * factor)
    theta[:, 1, 1] = torch.from_numpy(np.cos(angle) * factor)
    grid = F.affine_grid(theta.float(), list(images.shape), align_corners=False)
    moved = F.grid_sample(images + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1
    return moved, F.grid_sample(conditions, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def write_conditions(
    prepared_dir: str | Path, out_dir: str | Path, hed_weights: str | None, canny_sigma: float
) -> dict:
    """Condition map of every slice: image edges (HED, or Canny without weights) plus the
    ground-truth mask contour. Writes ``<case>.npz`` (``condition``, float16 in [0, 1])
    and ``meta.json`` recording the edge method actually used."""
    from medaug.conditions import condition_maps

    prepared_dir = Path(prepared_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cases = pd.read_csv(prepared_dir / "cases.tsv", sep="\t", dtype={"case_id": str}).case_id
    methods = set()
    with atomic_output(out_dir, directory=True) as tmp:
        for case_id in tqdm(cases, desc="condition maps", unit="case"):
            arrays = np.load(prepared_dir / "arrays" / f"{case_id}.npz")
            maps, method = condition_maps(
                arrays["image"], arrays["mask"], hed_weights=hed_weights, device=device, canny_sigma=canny_sigma
            )
            methods.add(method)
            np.savez_compressed(tmp / f"{case_id}.npz", condition=maps.astype(np.float16))
        meta = {"method": methods.pop() if len(methods) == 1 else sorted(methods), "hed_weights": hed_weights}
        write_json(tmp / "meta.json", meta)
    return meta


# --- fine-tuning ------------------------------------------------------------------------------


def _texts_for_vocabulary(prompts: dict[str, str], sampling: dict) -> list[str]:
    return [
        *prompts.values(),
        sampling["prompt_suffix"],
        sampling["style_prompt"],
        sampling["negative_prompt"],
        *augmentation_phrases(sampling["augmentation_phrases_file"]),
    ]


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
        components = load_pretrained_components(settings["pretrained_model"], settings["pretrained_controlnet"])
    else:
        components = build_tiny_components(
            settings["tiny_model"], image_size, _texts_for_vocabulary(prompts, sampling), seed
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
        rng = np.random.default_rng(stream_seed(seed, "finetune", fold, micro_step))
        index = rng.integers(0, len(images), batch_size)
        x, c = augment_pair(
            torch.from_numpy(images[index, None]),
            torch.from_numpy(conditions[index, None]),
            rng,
            settings["rotation_degrees"],
            tuple(settings["zoom_range"]),
        )
        g = torch.Generator().manual_seed(stream_seed(seed, "noise", fold, micro_step))
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=g)
        return {"images": x, "conditions": c, "timesteps": timesteps, "generator": g}

    def loss_fn(models: dict, batch: dict) -> torch.Tensor:
        model_device = next(models["unet"].parameters()).device
        x = _to_model_space(batch["images"].to(model_device), vae)
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
        gradient_accumulation_steps=settings["gradient_accumulation_steps"],
        mixed_precision=settings["mixed_precision"],
        ema_decay=settings["ema_decay"],
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
    write the manifest of all images up to ``ratio``."""
    from diffusers import DDIMScheduler

    from medaug.diffusion.sampling import batched, ddim_sample

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out_dir = Path(out_dir)
    rows = development_slices(prepared_dir, splits, fold)
    images, conditions = load_slices(prepared_dir, conditions_dir, rows)
    manifest = pd.read_csv(Path(previous) / "manifest.tsv", sep="\t") if previous else pd.DataFrame()
    start = int(manifest.k.max()) if len(manifest) else 0
    if start >= ratio:
        raise ValueError(f"previous ratio {start} is not below {ratio}")
    components, info = load_model_folder(model_dir)
    unet, controlnet, vae = (components[n] for n in ("unet", "controlnet", "vae"))
    for module in (unet, controlnet, vae, components["text_encoder"]):
        if module is not None:
            module.to(device).eval()
    scheduler = DDIMScheduler.from_config(components["scheduler"].config)
    phrases = augmentation_phrases(sampling["augmentation_phrases_file"])
    weights = sampling["prompt_weights"]
    tokenizer, text_encoder = components["tokenizer"], components["text_encoder"]
    main = encode_text(tokenizer, text_encoder, [f"{info['prompt']},{sampling['prompt_suffix']}"], device)
    style = encode_text(tokenizer, text_encoder, [sampling["style_prompt"]], device)
    phrase_embeddings = encode_text(tokenizer, text_encoder, phrases, device)
    negative = encode_text(tokenizer, text_encoder, [sampling["negative_prompt"]], device)
    jobs = [(i, k) for k in range(start + 1, ratio + 1) for i in range(len(rows))]
    latent_shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    new_images = np.zeros((len(jobs), *images.shape[1:]), dtype=np.float16)
    records = []
    for chunk in tqdm(
        batched(len(jobs), sampling["batch_size"]), desc=f"sample fold {fold} ratio {ratio}", unit="batch"
    ):
        batch = [jobs[j] for j in chunk]
        seeds = [stream_seed(sampling["seed"], rows.slice_id[i], k) for i, k in batch]
        noise = torch.stack([torch.randn(latent_shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
        cond_text = (
            weights[0] * main
            + weights[1] * phrase_embeddings[[(k - 1) % len(phrases) for _, k in batch]]
            + weights[2] * style
        )
        text = torch.cat([negative.expand(len(batch), -1, -1), cond_text])
        control = _control(torch.from_numpy(conditions[[i for i, _ in batch], None]).to(device), controlnet)
        control = torch.cat([control, control])  # the official sampler keeps the control in both branches

        def eps_fn(x_in: torch.Tensor, t: torch.Tensor, text=text, control=control) -> torch.Tensor:
            down, mid = controlnet(x_in, t, encoder_hidden_states=text, controlnet_cond=control, return_dict=False)
            return unet(
                x_in,
                t,
                encoder_hidden_states=text,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
            ).sample

        with torch.inference_mode():
            x0 = ddim_sample(
                eps_fn,
                tuple(noise.shape),
                scheduler,
                sampling["ddim_steps"],
                sampling["guidance_scale"],
                device=device,
                init=noise.to(device),
            )
            decoded = _from_model_space(x0, vae)[:, 0].float().cpu().numpy()
        if decoded.shape[1:] != images.shape[1:]:
            decoded = F.interpolate(torch.from_numpy(decoded[:, None]), size=images.shape[1:], mode="bilinear").numpy()[
                :, 0
            ]
        for position, (j, (i, k), s) in enumerate(zip(chunk, batch, seeds, strict=True)):
            new_images[j] = decoded[position]
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
                    "file": f"{out_dir.name}/samples.npz",
                    "index": j,
                }
            )
    manifest = pd.concat([manifest, pd.DataFrame(records)], ignore_index=True).sort_values(["source_slice_id", "k"])
    counts = manifest.groupby("source_slice_id").size()
    with atomic_output(out_dir, directory=True) as tmp:
        np.savez_compressed(tmp / "samples.npz", image=new_images)
        manifest.to_csv(tmp / "manifest.tsv", sep="\t", index=False)
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
