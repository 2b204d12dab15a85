"""Model builders and loaders shared by the papers' generators.

- a small randomly initialised pixel-space UNet + ControlNet + CLIP text encoder with an
  in-memory tokenizer (the demo's stand-in for Stable Diffusion; no hub access);
- Stable Diffusion 1.5 (+ ControlNet) from local diffusers folders (``local_files_only``);
- the model-folder format of a fine-tuned model (``save_pretrained`` sub-folders plus
  :data:`MODEL_INFO`; components it does not hold come from its base model);
- text encoding, and the conversion between images and what the UNet denoises (VAE
  latents, or the pixels themselves).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from medaug.errors import DatasetError
from medaug.weights import from_pretrained

MODEL_INFO = "medaug_model.json"


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


def load_pretrained_components(
    pretrained_model: str, pretrained_controlnet: str | None, config_key: str = "pretrained_model"
) -> dict:
    """Stable Diffusion 1.5 (+ ControlNet) from local diffusers folders, never a hub id."""
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    base = Path(pretrained_model)
    if not base.is_dir():
        raise DatasetError(base, f"{config_key} is not a folder")
    what = f"{config_key} (a Stable Diffusion 1.5 folder in diffusers layout)"
    unet = from_pretrained(UNet2DConditionModel, base, what, "unet")
    if pretrained_controlnet:
        controlnet = from_pretrained(ControlNetModel, pretrained_controlnet, "the pretrained ControlNet")
    else:
        controlnet = ControlNetModel.from_unet(unet)
    return {
        "unet": unet,
        "controlnet": controlnet,
        "text_encoder": from_pretrained(CLIPTextModel, base, what, "text_encoder"),
        "tokenizer": from_pretrained(AutoTokenizer, base, what, "tokenizer"),
        "scheduler": from_pretrained(DDPMScheduler, base, what, "scheduler"),
        "vae": from_pretrained(AutoencoderKL, base, what, "vae"),
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


def model_space_size(image_size: int, vae) -> int:
    """Side of what the UNet denoises for ``image_size`` px images: the VAE's latent grid
    (image size / 2^(levels - 1), 48 for SD 1.5 at 384 px), or the pixels themselves. The
    UNet's own ``sample_size`` (64 for SD 1.5) is only the size it was trained at."""
    if vae is None:
        return image_size
    return image_size // 2 ** (len(vae.config.block_out_channels) - 1)


def to_model_space(images: torch.Tensor, vae) -> torch.Tensor:
    """(B,1,H,W) images in [-1,1] -> what the UNet denoises (latents with a VAE)."""
    if vae is None:
        return images
    latents = vae.encode(images.repeat(1, vae.config.in_channels, 1, 1)).latent_dist.sample()
    return latents * vae.config.scaling_factor


def from_model_space(x: torch.Tensor, vae) -> torch.Tensor:
    if vae is None:
        return x.clamp(-1, 1)
    decoded = vae.decode(x / vae.config.scaling_factor).sample
    return decoded[:, :1].clamp(-1, 1)  # the official sampler keeps channel 0
