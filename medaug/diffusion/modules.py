"""Building blocks of the plain ``nn.Module`` diffusion networks (D-Cube's U-ViT, DiffMix's
SDM): the sinusoidal timestep embedding, and saving as diffusers-style model folders
(``config.json`` + ``diffusion_pytorch_model.safetensors``), so that the shared training
loop checkpoints and exports them like diffusers models without importing diffusers
(seconds per job)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of the timesteps, cosines first (guided-diffusion's and U-ViT's):
    ``[cos | sin]`` at ``dim // 2`` geometrically spaced frequencies, zero-padded to an odd
    ``dim``."""
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    angles = timesteps.float()[:, None] * frequencies[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class FolderModule(nn.Module):
    """A network whose constructor arguments are ``self.config`` (a namespace): enough to
    rebuild it from its folder."""

    config: SimpleNamespace

    def save_pretrained(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"_class_name": type(self).__name__, **vars(self.config)}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, folder / WEIGHTS_FILE)

    @classmethod
    def from_pretrained(cls, folder: str | Path):
        from safetensors.torch import load_file

        folder = Path(folder)
        config = json.loads((folder / CONFIG_FILE).read_text())
        config.pop("_class_name", None)
        model = cls(**config)
        model.load_state_dict(load_file(folder / WEIGHTS_FILE))
        return model.eval()
