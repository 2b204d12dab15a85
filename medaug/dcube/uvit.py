"""D-Cube's class-conditional U-ViT (spec §3.3; official ``module/modules.py::Cont_UViT``).

A pixel-space ViT denoiser with U-Net-style long skips (Bao et al., U-ViT): the image is cut
into ``patch_size`` patches, one token per patch; a raw sinusoidal time embedding is
prepended as one extra token; a learned class embedding is *added* to every token (the
official variant; the original U-ViT appends it as a token); ``depth // 2`` in-blocks, a
mid-block and ``depth // 2`` out-blocks, each out-block first merging the in-block output it
pairs with (last in, first out) through a linear layer on the concatenation; a final
LayerNorm, a linear patch decoder and a 3x3 convolution predict the noise (no learned
variance).

:meth:`UViT.forward` returns the noise prediction and, on request, the raw mid-block output
(the contrastive loss's feature) or every block's output (the classifier's hyper-features,
indexed in-blocks 0..d/2-1, mid d/2, out-blocks after). ``class_labels=None`` runs the
network without the class embedding, as the official classifier does.

Saved as diffusers saves a model (``config.json`` + ``diffusion_pytorch_model.safetensors``
through ``save_pretrained`` / ``from_pretrained``), so the shared training loop checkpoints
it, but a plain ``nn.Module``: the classifier jobs need not import diffusers (3.5 s each).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F

from medaug.diffusion.modules import FolderModule, timestep_embedding


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        # The official code runs attention in fp32 whatever the autocast dtype.
        out = F.scaled_dot_product_attention(qkv[0].float(), qkv[1].float(), qkv[2].float()).to(x.dtype)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Block(nn.Module):
    """Pre-norm transformer block; with ``skip`` it first merges a long-skip input."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, skip: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            # Replaces the stream (no residual around it), as the official block does.
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def init_weights(module: nn.Module) -> None:
    """The official initialisation: truncated-normal (std 0.02) linear weights, zero biases,
    unit LayerNorms; convolutions and embeddings keep PyTorch's defaults."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class UViT(FolderModule):
    """Class-conditional U-ViT noise predictor (defaults: the paper's configuration)."""

    def __init__(
        self,
        image_size: int = 128,
        patch_size: int = 8,
        in_channels: int = 1,
        embed_dim: int = 512,
        depth: int = 12,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        num_classes: int = 3,
    ):
        super().__init__()
        self.config = SimpleNamespace(
            image_size=image_size,
            patch_size=patch_size,
            in_channels=in_channels,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            num_classes=num_classes,
        )
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        if depth % 2:
            raise ValueError(f"depth must be even (in-blocks + mid + out-blocks = depth + 1), got {depth}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not a multiple of num_heads {num_heads}")
        self.patch_embed = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.label_emb = nn.Embedding(num_classes, embed_dim)
        self.num_tokens = (image_size // patch_size) ** 2 + 1  # patches + the time token
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, embed_dim))
        self.in_blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth // 2))
        self.mid_block = Block(embed_dim, num_heads, mlp_ratio, qkv_bias)
        self.out_blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, skip=True) for _ in range(depth // 2)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.decoder_pred = nn.Linear(embed_dim, patch_size**2 * in_channels)
        self.final_layer = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_weights)

    @property
    def num_blocks(self) -> int:
        """In-blocks + mid-block + out-blocks: the indices hyper-features are taken from."""
        return 2 * len(self.in_blocks) + 1

    @property
    def mid_index(self) -> int:
        return len(self.in_blocks)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        return_mid: bool = False,
        return_blocks: bool = False,
    ):
        """Noise prediction for ``x`` (B, C, H, W) at integer ``timesteps`` (B,).

        ``return_mid``: also the raw mid-block output (B, tokens, dim). ``return_blocks``:
        instead of decoding, the output of every block in order (a list; out-blocks after the
        last one needed are still run, as the official classifier does).
        """
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        time_token = timestep_embedding(timesteps, self.config.embed_dim).to(tokens.dtype)[:, None]
        tokens = torch.cat([time_token, tokens], dim=1)
        if class_labels is not None:
            tokens = tokens + self.label_emb(class_labels)[:, None]
        tokens = tokens + self.pos_embed
        blocks, skips = [], []
        for block in self.in_blocks:
            tokens = block(tokens)
            skips.append(tokens)
            blocks.append(tokens)
        tokens = self.mid_block(tokens)
        mid = tokens
        blocks.append(tokens)
        for block in self.out_blocks:
            tokens = block(tokens, skips.pop())
            blocks.append(tokens)
        if return_blocks:
            return blocks
        patches = self.decoder_pred(self.norm(tokens))[:, 1:]
        side = self.config.image_size // self.config.patch_size
        p, channels = self.config.patch_size, self.config.in_channels
        image = patches.reshape(-1, side, side, p, p, channels).permute(0, 5, 1, 3, 2, 4)
        eps = self.final_layer(image.reshape(-1, channels, side * p, side * p))
        return (eps, mid) if return_mid else eps
