"""The semantic diffusion model (SDM) network of DiffMix: guided-diffusion's (ADM) UNet whose
middle and decoder blocks are conditioned on the semantic map through spatially-adaptive
group normalisation (spec §2.3).

Laid out so that the official checkpoints (``ema_0.9999_010000.pt``, a plain state dict)
load with ``strict=True``: every module name, parameter shape and registration order is the
official ``UNetModel``'s at the same settings (``tests/fixtures/sdm_consep_keys.json`` holds
the official list at the paper configuration). Written from the description of that model:

- time: sinusoidal embedding ([cos | sin], 10000 max period) of the original step index,
  then Linear-SiLU-Linear to 4× the base width;
- encoder (``input_blocks``): plain residual blocks with scale-shift time conditioning, an
  attention block after each residual block at the attention resolutions, a residual
  down-sampling block (average pooling) closing every level but the last; it never sees the
  label;
- middle: SPADE residual block, attention, SPADE residual block;
- decoder (``output_blocks``): per level, ``num_res_blocks + 1`` SPADE residual blocks on
  the concatenation [features, skip], attention at the attention resolutions, and a SPADE
  residual up-sampling block (nearest) closing every level but the first;
- SPADE norm: group norm without affine, then ``x (1 + γ(y)) + β(y)`` with γ, β two 3×3
  convolutions on a shared 3×3 convolution (``spade_hidden`` channels, official 128) +
  ReLU of the label map resized (nearest) to the features;
- attention: the legacy QKV layout (per head [q, k, v] contiguous), 64 channels per head;
- output: group norm, SiLU, zero-initialised 3×3 convolution to ``out_channels`` (6: the
  noise and the learned-variance interpolation of each RGB channel).

The label map ``y`` is the one-hot class map plus the instance-edge channel (see
:func:`semantic_condition`); a dropped label (classifier-free guidance) is all zeros.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from medaug.diffusion.modules import FolderModule, timestep_embedding
from medaug.weights import load_state_dict_file

SPADE_HIDDEN = 128
GROUPS = 32
# Channel multipliers per level, by image size, as guided-diffusion chooses them.
CHANNEL_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}


class GroupNorm32(nn.GroupNorm):
    """Group norm computed in float32 (under fp16 autocast too)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def zero_module(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        parameter.detach().zero_()
    return module


class SPADEGroupNorm(nn.Module):
    def __init__(self, channels: int, label_channels: int, hidden: int = SPADE_HIDDEN, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.GroupNorm(GROUPS, channels, affine=False, eps=eps)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_channels, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        hidden = self.mlp_shared(F.interpolate(y, size=x.shape[-2:], mode="nearest"))
        return self.norm(x) * (1 + self.mlp_gamma(hidden)) + self.mlp_beta(hidden)


def _resample(up: bool, down: bool) -> nn.Module:
    if up:
        return nn.Upsample(scale_factor=2, mode="nearest")
    if down:
        return nn.AvgPool2d(2, 2)
    return nn.Identity()


class ResBlock(nn.Module):
    """Encoder residual block: time conditioning by scale and shift of the second norm."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, dropout: float, down: bool = False):
        super().__init__()
        self.in_layers = nn.Sequential(
            GroupNorm32(GROUPS, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.resample = down
        self.h_upd = self.x_upd = _resample(False, down)
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(GROUPS, out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.resample:
            h = self.in_layers[:-1](x)
            h, x = self.h_upd(h), self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        scale, shift = self.emb_layers(emb).type(h.dtype)[..., None, None].chunk(2, dim=1)
        norm, rest = self.out_layers[0], self.out_layers[1:]
        h = rest(norm(h) * (1 + scale) + shift)
        return self.skip_connection(x) + h


class SDMResBlock(nn.Module):
    """Middle/decoder residual block: both norms are SPADE norms of the label map."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int,
        label_channels: int,
        dropout: float,
        up: bool = False,
        spade_hidden: int = SPADE_HIDDEN,
    ):
        super().__init__()
        self.in_norm = SPADEGroupNorm(channels, label_channels, spade_hidden)
        self.in_layers = nn.Sequential(nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.resample = up
        self.h_upd = self.x_upd = _resample(up, False)
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        self.out_norm = SPADEGroupNorm(out_channels, label_channels, spade_hidden)
        self.out_layers = nn.Sequential(
            nn.SiLU(), nn.Dropout(dropout), zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.in_layers[0](self.in_norm(x, y))
        if self.resample:
            h, x = self.h_upd(h), self.x_upd(x)
        h = self.in_layers[1](h)
        scale, shift = self.emb_layers(emb).type(h.dtype)[..., None, None].chunk(2, dim=1)
        h = self.out_layers(self.out_norm(h, y) * (1 + scale) + shift)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over the pixels, legacy QKV layout, ``head_channels`` per head."""

    def __init__(self, channels: int, head_channels: int):
        super().__init__()
        if head_channels < 1 or channels % head_channels:
            raise ValueError(f"{channels} channels do not split into heads of {head_channels}")
        self.heads = channels // head_channels
        self.norm = GroupNorm32(GROUPS, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, *spatial = x.shape
        flat = x.reshape(batch, channels, -1)
        qkv = self.qkv(self.norm(flat))
        width = channels // self.heads
        q, k, v = qkv.reshape(batch * self.heads, 3 * width, -1).split(width, dim=1)
        scale = 1 / math.sqrt(math.sqrt(width))
        weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        attended = torch.einsum("bts,bcs->bct", weight, v).reshape(batch, channels, -1)
        return (flat + self.proj_out(attended)).reshape(batch, channels, *spatial)


class Stage(nn.Sequential):
    """A sequence of blocks, each given what it needs of (time embedding, label map)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, SDMResBlock):
                x = layer(x, emb, y)
            elif isinstance(layer, ResBlock):
                x = layer(x, emb)
            else:
                x = layer(x)
        return x


class SemanticUNet(FolderModule):
    """The SDM network; ``forward(x, t, y)`` → (N, out_channels, H, W)."""

    def __init__(
        self,
        image_size: int = 256,
        label_channels: int = 6,
        model_channels: int = 256,
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] = (32, 16, 8),
        channel_mult: tuple[float, ...] | None = None,
        num_head_channels: int = 64,
        dropout: float = 0.0,
        in_channels: int = 3,
        out_channels: int = 6,
        gradient_checkpointing: bool = False,
        spade_hidden: int = SPADE_HIDDEN,
    ):
        super().__init__()
        mult = tuple(channel_mult) if channel_mult else CHANNEL_MULT[image_size]
        attention_ds = {image_size // resolution for resolution in attention_resolutions}
        self.config = SimpleNamespace(
            image_size=image_size,
            label_channels=label_channels,
            model_channels=model_channels,
            num_res_blocks=num_res_blocks,
            attention_resolutions=list(attention_resolutions),
            channel_mult=list(mult),
            num_head_channels=num_head_channels,
            dropout=dropout,
            in_channels=in_channels,
            out_channels=out_channels,
            gradient_checkpointing=gradient_checkpointing,
            spade_hidden=spade_hidden,
        )
        # Recompute each block's activations in the backward pass instead of keeping them
        # (the official use_checkpoint): the same gradients in far less memory.
        self.gradient_checkpointing = gradient_checkpointing
        self.label_channels = label_channels
        self.model_channels = model_channels
        emb = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))

        ch = int(mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([Stage(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skips, ds = [ch], 1
        for level, factor in enumerate(mult):
            for _ in range(num_res_blocks):
                out = int(factor * model_channels)
                layers = [ResBlock(ch, emb, out, dropout)]
                ch = out
                if ds in attention_ds:
                    layers.append(AttentionBlock(ch, num_head_channels))
                self.input_blocks.append(Stage(*layers))
                skips.append(ch)
            if level != len(mult) - 1:
                self.input_blocks.append(Stage(ResBlock(ch, emb, ch, dropout, down=True)))
                skips.append(ch)
                ds *= 2

        self.middle_block = Stage(
            SDMResBlock(ch, emb, ch, label_channels, dropout, spade_hidden=spade_hidden),
            AttentionBlock(ch, num_head_channels),
            SDMResBlock(ch, emb, ch, label_channels, dropout, spade_hidden=spade_hidden),
        )

        self.output_blocks = nn.ModuleList()
        for level, factor in reversed(list(enumerate(mult))):
            for index in range(num_res_blocks + 1):
                out = int(model_channels * factor)
                layers = [SDMResBlock(ch + skips.pop(), emb, out, label_channels, dropout, spade_hidden=spade_hidden)]
                ch = out
                if ds in attention_ds:
                    layers.append(AttentionBlock(ch, num_head_channels))
                if level and index == num_res_blocks:
                    layers.append(SDMResBlock(ch, emb, ch, label_channels, dropout, up=True, spade_hidden=spade_hidden))
                    ds //= 2
                self.output_blocks.append(Stage(*layers))

        first = int(mult[0] * model_channels)
        self.out = nn.Sequential(
            GroupNorm32(GROUPS, ch), nn.SiLU(), zero_module(nn.Conv2d(first, out_channels, 3, padding=1))
        )

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y.shape[1] != self.label_channels or y.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"label map of shape {tuple(y.shape)} for images of shape {tuple(x.shape)}")
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        run = self._checkpointed if self.gradient_checkpointing and self.training else Stage.__call__
        h, skips = x, []
        for block in self.input_blocks:
            h = run(block, h, emb, y)
            skips.append(h)
        h = run(self.middle_block, h, emb, y)
        for block in self.output_blocks:
            h = run(block, torch.cat([h, skips.pop()], dim=1), emb, y)
        return self.out(h)

    @staticmethod
    def _checkpointed(block: Stage, h: torch.Tensor, emb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from torch.utils.checkpoint import checkpoint

        return checkpoint(block, h, emb, y, use_reentrant=False)


def instance_edges(inst_map: torch.Tensor) -> torch.Tensor:
    """1 where a pixel's instance id differs from a 4-neighbour's (both sides of every
    boundary, nucleus/background included), as the official conditioning; (N, 1, H, W)."""
    edge = torch.zeros_like(inst_map, dtype=torch.bool)
    horizontal = inst_map[..., :, 1:] != inst_map[..., :, :-1]
    vertical = inst_map[..., 1:, :] != inst_map[..., :-1, :]
    edge[..., :, 1:] |= horizontal
    edge[..., :, :-1] |= horizontal
    edge[..., 1:, :] |= vertical
    edge[..., :-1, :] |= vertical
    return edge.float()


def semantic_condition(type_map: torch.Tensor, inst_map: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The label map ``y``: one-hot of the merged types (``num_classes`` channels with the
    background) and the instance-edge channel last. ``type_map``, ``inst_map``: (N, 1, H, W)."""
    one_hot = torch.zeros(type_map.shape[0], num_classes, *type_map.shape[-2:], device=type_map.device)
    one_hot.scatter_(1, type_map.long(), 1.0)
    return torch.cat([one_hot, instance_edges(inst_map)], dim=1)


def load_official_checkpoint(network: SemanticUNet, path: str | Path) -> None:
    """Load an official guided-diffusion/SDM checkpoint (a plain state dict, e.g.
    ``ema_0.9999_010000.pt``) into ``network``; every key and shape must match."""
    load_state_dict_file(network, path, "SDM weights (diffmix.generator.checkpoints)")
