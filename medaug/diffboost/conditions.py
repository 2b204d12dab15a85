"""Condition ("edge") maps that steer DiffBoost's ControlNet (spec §2).

For every slice the official code builds ``clip(HED(image) + 255 * boundary(mask), 0, 255) / 255``:
the HED edge detector of Xie & Tu (2015), in the ControlNet annotator port, applied to the slice
scaled to [0, 255] and stacked to three channels, plus the contour of the ground-truth labels.
HED needs the pretrained BSDS500 checkpoint (``network-bsds500.pth``); when none is configured we
fall back to Canny edges and say so loudly, because the maps then differ from the paper's.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import torch
from scipy.signal import convolve2d

from medaug.weights import load_state_dict_file

log = logging.getLogger(__name__)

# Complex Scharr-like kernel of the official ``get_2dmask_boundary``: the real part is the
# horizontal derivative, the imaginary part the vertical one, so |conv| is the gradient magnitude.
_BOUNDARY_KERNEL = np.array(
    [
        [-3 - 3j, 0 - 10j, +3 - 3j],
        [-10 + 0j, 0 + 0j, +10 + 0j],
        [-3 + 3j, 0 + 10j, +3 + 3j],
    ]
)

# Per-channel means (BGR order) of the Caffe HED model, subtracted from the [0, 255] input.
# Our slices are grey stacked three times, so the RGB->BGR flip of the official code is a no-op.
_HED_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)

# Four 2x2 max-poolings: smaller inputs would leave the deepest stage with an empty feature map.
_HED_MIN_SIZE = 16


def mask_contour(mask: np.ndarray) -> np.ndarray:
    """Boundary of a label map: ``|conv2d(mask, K)|`` clipped to [0, 1], as the official code.

    Any change of label (background/foreground or between two classes) gives a band about two
    pixels wide; symmetric padding means that labels touching the image border draw no line there.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask_contour expects one (H, W) label map, got shape {mask.shape}")
    gradient = convolve2d(mask.astype(np.float64), _BOUNDARY_KERNEL, mode="same", boundary="symm")
    return np.clip(np.abs(gradient), 0.0, 1.0).astype(np.float32)


def _vgg_stage(in_channels: int, out_channels: int, n_convs: int, pool: bool) -> torch.nn.Sequential:
    # The layer order (pool first, then conv/ReLU pairs) fixes the indices in the checkpoint's keys,
    # e.g. ``netVggTwo.1.weight`` for the first convolution after the pooling.
    layers: list[torch.nn.Module] = [torch.nn.MaxPool2d(kernel_size=2, stride=2)] if pool else []
    for index in range(n_convs):
        layers.append(torch.nn.Conv2d(in_channels if index == 0 else out_channels, out_channels, 3, padding=1))
        layers.append(torch.nn.ReLU(inplace=False))
    return torch.nn.Sequential(*layers)


def _rename_official_keys(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors) -> None:
    """Accept the original checkpoint's ``module*`` names, which the official loader renames to ``net*``.

    network-bsds500.pth comes from sniklaus/pytorch-hed, whose attributes were called ``moduleVggOne``
    and so on; ControlNet's port (used by DiffBoost) renamed them to ``netVggOne`` and loads the file with
    ``key.replace('module', 'net')``. Doing the same in a pre-hook lets ``load_state_dict`` take either.
    """
    for key in [key for key in state_dict if key.startswith(prefix) and "module" in key[len(prefix) :]]:
        state_dict[prefix + key[len(prefix) :].replace("module", "net")] = state_dict.pop(key)


class HedNetwork(torch.nn.Module):
    """Holistically-nested edge detection (VGG16 trunk, five side outputs, learned fusion).

    Parameter names and shapes follow ControlNet's ``annotator/hed`` network so that the BSDS500
    checkpoint loads as is. ``forward`` takes images in [0, 255] (N, 3, H, W) and returns the fused
    edge probability (N, 1, H, W) in [0, 1].
    """

    def __init__(self) -> None:
        super().__init__()
        self.netVggOne = _vgg_stage(3, 64, 2, pool=False)
        self.netVggTwo = _vgg_stage(64, 128, 2, pool=True)
        self.netVggThr = _vgg_stage(128, 256, 3, pool=True)
        self.netVggFou = _vgg_stage(256, 512, 3, pool=True)
        self.netVggFiv = _vgg_stage(512, 512, 3, pool=True)
        self.netScoreOne = torch.nn.Conv2d(64, 1, kernel_size=1)
        self.netScoreTwo = torch.nn.Conv2d(128, 1, kernel_size=1)
        self.netScoreThr = torch.nn.Conv2d(256, 1, kernel_size=1)
        self.netScoreFou = torch.nn.Conv2d(512, 1, kernel_size=1)
        self.netScoreFiv = torch.nn.Conv2d(512, 1, kernel_size=1)
        self.netCombine = torch.nn.Sequential(torch.nn.Conv2d(5, 1, kernel_size=1), torch.nn.Sigmoid())
        self.register_load_state_dict_pre_hook(_rename_official_keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"HedNetwork expects (N, 3, H, W) images, got shape {tuple(x.shape)}")
        height, width = x.shape[2], x.shape[3]
        if min(height, width) < _HED_MIN_SIZE:
            raise ValueError(f"HedNetwork needs images of at least {_HED_MIN_SIZE} pixels a side, got {height}x{width}")
        x = x - torch.tensor(_HED_BGR_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        features = []
        for stage in (self.netVggOne, self.netVggTwo, self.netVggThr, self.netVggFou, self.netVggFiv):
            x = stage(x)
            features.append(x)
        heads = (self.netScoreOne, self.netScoreTwo, self.netScoreThr, self.netScoreFou, self.netScoreFiv)
        # Each side output is scored at its own resolution, then brought back to the input size.
        scores = [
            torch.nn.functional.interpolate(head(feature), size=(height, width), mode="bilinear", align_corners=False)
            for head, feature in zip(heads, features, strict=True)
        ]
        return self.netCombine(torch.cat(scores, dim=1))


def load_hed(weights_path: str | Path, device: str | torch.device = "cpu") -> HedNetwork:
    """HED with the weights of ``weights_path`` (a plain state dict, e.g. network-bsds500.pth), in eval mode."""
    model = HedNetwork()
    load_state_dict_file(model, weights_path, "HED weights (the BSDS500 checkpoint network-bsds500.pth)")
    return model.to(device).eval()


@functools.lru_cache(maxsize=1)
def _load_hed_once(path: Path, mtime_ns: int, size: int, device: str) -> HedNetwork:
    return load_hed(path, device)


def _cached_hed(weights_path: str | Path, device: str) -> HedNetwork:
    # The pipeline calls condition_maps once per case: keep the ~60 MB network instead of reloading it,
    # unless the file changed in between.
    path = Path(weights_path).resolve()
    if not path.is_file():
        return load_hed(path, device)  # raises the user-facing error
    stat = path.stat()
    return _load_hed_once(path, stat.st_mtime_ns, stat.st_size, str(device))


def _check_stack(images: np.ndarray, what: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"{what} expects an (N, H, W) stack, got shape {images.shape}")
    return images


def hed_edges(images: np.ndarray, model: HedNetwork, batch_size: int = 16) -> np.ndarray:
    """HED edge maps of slices in [-1, 1], as float32 (N, H, W) in [0, 1].

    As the official ``get_boundary_batch``: slices are mapped to [0, 255], stacked to three channels,
    and the output is scaled by 255 and truncated to uint8 before we divide by 255 again, so our maps
    take the same 256 levels as those the paper's ControlNet was trained on.
    """
    images = _check_stack(images, "hed_edges")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    parameter = next(model.parameters())
    out = np.empty(images.shape, dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32))
            batch = ((batch + 1) / 2 * 255).to(device=parameter.device, dtype=parameter.dtype)
            edges = model(batch.unsqueeze(1).expand(-1, 3, -1, -1))[:, 0]
            levels = np.clip(edges.float().cpu().numpy() * 255.0, 0, 255).astype(np.uint8)
            out[start : start + batch_size] = levels / np.float32(255)
    return out


# Hysteresis thresholds of ControlNet's Canny annotator, cv2.Canny(image, 100, 200) on 8-bit
# images, in the units of an image in [0, 1].
CANNY_THRESHOLDS = (100 / 255, 200 / 255)


def canny_edges(
    images: np.ndarray, sigma: float = 1.0, thresholds: tuple[float, float] = CANNY_THRESHOLDS
) -> np.ndarray:
    """Canny edges of slices in [-1, 1], as float32 (N, H, W) with values 0 or 1.

    Slices are mapped to [0, 1] first so that the hysteresis ``thresholds`` (low, high; on the
    gradient magnitude) refer to the full intensity range. skimage compensates the smoothing at
    the image border, so bright tissue touching it draws no frame.
    """
    from skimage.feature import canny

    images = _check_stack(images, "canny_edges")
    out = np.empty(images.shape, dtype=np.float32)
    for index, image in enumerate(images):
        out[index] = canny(
            (image.astype(np.float64) + 1) / 2, sigma=sigma, low_threshold=thresholds[0], high_threshold=thresholds[1]
        )
    return out


@functools.cache
def _warn_canny_fallback(canny_sigma: float) -> None:
    """Once per process: a dataset's cases all take the same fallback."""
    log.warning(
        "No HED weights configured: condition maps use Canny edges (sigma=%s) instead of the HED edges "
        "that the DiffBoost paper used, so results may differ from the paper. To follow the paper, "
        "download ControlNet's HED checkpoint network-bsds500.pth "
        "(huggingface.co/lllyasviel/ControlNet, annotator/ckpts) and set its local path as "
        "diffboost.conditions.hed_weights in the config.",
        canny_sigma,
    )


def condition_maps(
    images: np.ndarray,
    masks: np.ndarray,
    hed_weights: str | Path | None = None,
    device: str = "cpu",
    canny_sigma: float = 1.0,
    canny_thresholds: tuple[float, float] = CANNY_THRESHOLDS,
) -> tuple[np.ndarray, str]:
    """Condition maps ``clip(edges + mask_contour, 0, 1)`` of (N, H, W) slices in [-1, 1] and their label maps.

    Returns float32 (N, H, W) maps in [0, 1] and the edge method, ``"hed"`` (the paper's, with
    ``hed_weights`` loaded on ``device``) or ``"canny"``: without ``hed_weights`` we fall back to Canny
    and log a warning that says the paper used HED and how to configure its weights.
    """
    images = _check_stack(images, "condition_maps")
    masks = _check_stack(masks, "condition_maps")
    if images.shape != masks.shape:
        raise ValueError(f"images {images.shape} and masks {masks.shape} must have the same shape")
    if hed_weights is None:
        _warn_canny_fallback(canny_sigma)
        edges, method = canny_edges(images, sigma=canny_sigma, thresholds=canny_thresholds), "canny"
    else:
        model = _cached_hed(hed_weights, device)
        log.info("Computing HED edges of %d slices on %s", images.shape[0], device)
        edges, method = hed_edges(images, model), "hed"
    contours = np.stack([mask_contour(mask) for mask in masks]) if len(masks) else np.zeros(masks.shape, np.float32)
    return np.clip(edges + contours, 0.0, 1.0).astype(np.float32), method
