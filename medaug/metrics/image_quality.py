"""Distances between the feature distributions of two image sets: FID and KID.

Both compare features of a *feature extractor*; the numbers are only comparable between runs
that used the same one. With the Inception-v3 network of the FID literature (the TorchScript
file ``inception-2015-12-05.pt`` that StyleGAN2-ADA and clean-fid use) they are the familiar
FID and KID; with any other extractor (the demo's, trained in the pipeline) they measure the
same thing on a different scale and must be labelled so, next to a real-vs-real reference.

The distances themselves are torchmetrics' (``FrechetInceptionDistance`` and
``KernelInceptionDistance``), fed features this module has already extracted:

- FID (Heusel et al. 2017): ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``.
- KID (Binkowski et al. 2018): the unbiased MMD^2 with the cubic polynomial kernel
  ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets of equal size, with its standard
  deviation over subsets.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

# Input side of the Inception network of the FID literature.
INCEPTION_SIDE = 299
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


class _ExtractedFeatures(torch.nn.Module):
    """torchmetrics' image metrics run a feature network on what they are given; ours are
    already features, so its network is the identity."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _as_features(a: np.ndarray, b: np.ndarray, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"{metric} needs two (N, D) feature arrays of the same D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"{metric} needs at least two feature vectors per set")
    return torch.from_numpy(a), torch.from_numpy(b)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between feature sets ``a`` (N, D) and ``b`` (M, D), N, M >= 2 (torchmetrics)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    a, b = _as_features(a, b, "FID")
    metric = FrechetInceptionDistance(feature=_ExtractedFeatures(a.shape[1]))  # float64 states
    metric.update(a, real=True)
    metric.update(b, real=False)
    return float(metric.compute())


def kernel_distance(
    a: np.ndarray,
    b: np.ndarray,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> tuple[float, float]:
    """KID between feature sets ``a`` and ``b`` (torchmetrics): (mean, std) of the unbiased
    MMD^2 over ``subsets`` random subsets of ``min(subset_size, len(a), len(b))`` vectors each,
    drawn from ``seed``."""
    from torchmetrics.image.kid import KernelInceptionDistance

    a, b = _as_features(a, b, "KID")
    size = min(subset_size, len(a), len(b))
    with warnings.catch_warnings():
        # It warns that it keeps every feature vector; ours are already in memory.
        warnings.filterwarnings("ignore", message=".*will save all extracted features")
        metric = KernelInceptionDistance(feature=_ExtractedFeatures(a.shape[1]), subsets=subsets, subset_size=size)
    metric.update(a, real=True)
    metric.update(b, real=False)
    # Its subsets come from torch's global generator: seed a private copy of it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


class InceptionExtractor:
    """The FID literature's Inception-v3 from a local TorchScript file
    (``inception-2015-12-05.pt``): grey images in [-1, 1] are repeated to RGB, scaled to
    [0, 255], resized bilinearly to 299 px and mapped to the 2048 pool features."""

    label = "Inception-v3 (FID literature)"

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the FID feature extractor file does not exist")
        self.device = torch.device(device)
        self.network = torch.jit.load(str(path), map_location=self.device).eval()

    @torch.inference_mode()
    def __call__(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        features = []
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32))
            x = ((x[:, None].repeat(1, 3, 1, 1) + 1) * 127.5).to(self.device)
            x = torch.nn.functional.interpolate(x, size=(INCEPTION_SIDE, INCEPTION_SIDE), mode="bilinear")
            features.append(self.network(x, return_features=True).float().cpu().numpy())
        return np.concatenate(features)


class BottleneckExtractor:
    """Features from a network trained on the task's own images (in the demo: a segmenter
    trained in the pipeline): the spatial mean of its bottleneck, the widest module output
    among those with the fewest pixels (the first in forward order on a tie). FID/KID on
    these features are not comparable to Inception FID."""

    label = "segmenter bottleneck (not comparable to Inception FID)"

    def __init__(self, network: torch.nn.Module, image_size: int):
        self.network = network.eval()
        self.modules = dict(network.named_modules())
        shapes: list[tuple[str, int, int]] = []
        hooks = [
            module.register_forward_hook(
                lambda _m, _i, out, name=name: (
                    shapes.append((name, out.shape[-1] * out.shape[-2], out.shape[1]))
                    if isinstance(out, torch.Tensor) and out.dim() == 4
                    else None
                )
            )
            for name, module in self.modules.items()
            if name and not list(module.children())
        ]
        self.device = next(network.parameters()).device
        with torch.inference_mode():
            network(torch.zeros(1, 1, image_size, image_size, device=self.device))
        for hook in hooks:
            hook.remove()
        smallest = min(pixels for _, pixels, _ in shapes)
        widest = max(channels for _, pixels, channels in shapes if pixels == smallest)
        self.layer = next(name for name, p, c in shapes if (p, c) == (smallest, widest))

    @torch.inference_mode()
    def __call__(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        captured = []
        hook = self.modules[self.layer].register_forward_hook(lambda _m, _i, out: captured.append(out.mean((2, 3))))
        try:
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32))
                self.network(x[:, None].to(self.device))
        finally:
            hook.remove()
        return torch.cat(captured).float().cpu().numpy()
