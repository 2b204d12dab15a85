"""HoVer-Net, DiffMix's downstream network (spec §2.5), on MONAI: its network, loss and
pathology post-processing.

A training patch is HoVer-Net's ``[P, P, 5]`` array (RGB, instance id, type). Its targets:
the nucleus-pixel map (two classes, one-hot), the horizontal and vertical distance maps of
each pixel to its nucleus' centre (MONAI's ``ComputeHoVerMaps``, in [-1, 1]) and the type
map (one-hot over the merged types with the background), centre-cropped to the network's
output (HoVer-Net's fast mode maps 256 px to 164 px). The loss is MONAI's
``HoVerNetLoss`` with the official weights (``hovernet/opt.py``: every term 1) and, under
the official protocol, the official gradient kernels (``hovernet_loss``).

Networks (``kind``): ``hovernet``, MONAI's ``HoVerNet`` in fast mode (a pre-activation
ResNet-50 encoder and three decoders; 256 px patches only); ``light``, the demo's
stand-in with the same three outputs, loss and post-processing: one small MONAI ``UNet``
whose last layer is split into the three branches (same size in and out).
"""

from __future__ import annotations

import numpy as np
import torch

from medaug.monai_imports import import_monai

# MONAI's HoVerNetBranch values: the keys of the outputs and targets.
NP, HV, NC = "nucleus_prediction", "horizontal_vertical", "type_prediction"
FAST_INPUT, FAST_OUTPUT = 256, 164
OFFICIAL_LOSS_WEIGHTS = {
    "lambda_hv_mse": 1.0,
    "lambda_hv_mse_grad": 1.0,
    "lambda_np_ce": 1.0,
    "lambda_np_dice": 1.0,
    "lambda_nc_ce": 1.0,
    "lambda_nc_dice": 1.0,
}


class LightHoVerNet(torch.nn.Module):
    """HoVer-Net's three outputs from one small MONAI UNet (the demo's network)."""

    def __init__(self, num_types: int, channels: tuple[int, ...] = (16, 32, 64), strides: tuple[int, ...] = (2, 2)):
        super().__init__()
        import_monai()
        from monai.networks.nets import UNet

        self.num_types = num_types
        self.net = UNet(
            spatial_dims=2,
            in_channels=3,
            out_channels=4 + num_types,
            channels=channels,
            strides=strides,
            num_res_units=1,
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(x)
        return {NP: out[:, :2], HV: out[:, 2:4], NC: out[:, 4:]}


def build_network(kind: str, num_types: int, light_channels: tuple[int, ...] = (16, 32, 64)) -> torch.nn.Module:
    """``num_types``: merged types with the background."""
    import_monai()
    if kind == "hovernet":
        from monai.networks.nets import HoVerNet

        return HoVerNet(mode="fast", in_channels=3, np_out_channels=2, out_classes=num_types, decoder_padding=False)
    if kind == "light":
        return LightHoVerNet(num_types, tuple(light_channels), (2,) * (len(light_channels) - 1))
    raise ValueError(f"unknown HoVer-Net network {kind!r} (hovernet or light)")


def output_size(kind: str, input_size: int) -> int:
    if kind == "hovernet":
        if input_size != FAST_INPUT:
            raise ValueError(f"HoVer-Net's fast mode takes {FAST_INPUT} px patches, not {input_size}")
        return FAST_OUTPUT
    return input_size


def _centre_crop(array: np.ndarray, size: int) -> np.ndarray:
    top = (array.shape[-2] - size) // 2
    left = (array.shape[-1] - size) // 2
    return array[..., top : top + size, left : left + size]


def patch_targets(patches: np.ndarray, num_types: int, out_size: int) -> dict[str, torch.Tensor]:
    """Network inputs and targets of a batch of ``[N, P, P, 5]`` patches: ``image`` (N, 3, P,
    P) in [0, 1], and the three branches' targets cropped to ``out_size``."""
    import_monai()
    from monai.transforms import ComputeHoVerMaps

    patches = np.asarray(patches)
    image = torch.from_numpy(patches[..., :3].astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
    inst = _centre_crop(patches[..., 3].astype(np.int64), out_size)
    types = _centre_crop(patches[..., 4].astype(np.int64), out_size)
    if types.max() >= num_types:
        raise ValueError(f"type {int(types.max())} in the patches, but {num_types} types with the background")
    # Distance maps of the whole patch, then cropped: a nucleus the crop cuts keeps its
    # centre (hover_net computes them before cropping too).
    whole = patches[..., 3].astype(np.int64)
    hover = np.stack([np.asarray(ComputeHoVerMaps()(i[None])) for i in whole]).astype(np.float32)
    hover = _centre_crop(hover, out_size)
    nucleus = torch.from_numpy((inst > 0).astype(np.int64))
    return {
        "image": image,
        NP: torch.nn.functional.one_hot(nucleus, 2).permute(0, 3, 1, 2).float(),
        HV: torch.from_numpy(hover),
        NC: torch.nn.functional.one_hot(torch.from_numpy(types), num_types).permute(0, 3, 1, 2).float(),
    }


# What diffmix.hovernet.protocol switches: the gradient term of the distance maps' loss.
PROTOCOLS = ("official", "clean")


def official_gradient_kernels(size: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """The official HoVer-Net's gradient kernels (``msge_loss`` in hover_net's
    ``models/hovernet/utils.py``): at row offset a and column offset b from the centre,
    a / (a² + b²) and b / (a² + b²), 0 at the centre. Unlike a Sobel kernel they are not
    normalised (the squared-gradient term comes out 60-100x MONAI's on the same outputs),
    and the official code applies
    the row-offset one to the horizontal map: each map is differentiated along the other
    axis than its own."""
    offsets = torch.arange(size, dtype=torch.float32) - size // 2
    rows, cols = torch.meshgrid(offsets, offsets, indexing="ij")
    squared = rows**2 + cols**2
    squared[size // 2, size // 2] = 1.0  # both numerators are 0 there
    return rows / squared, cols / squared


def official_gradients(hover: torch.Tensor) -> torch.Tensor:
    """(N, 2, H, W) distance maps -> their gradients as the official loss takes them: the
    horizontal map (channel 0) with the row-offset kernel, the vertical one with the
    column-offset kernel, zero-padded."""
    kernel_rows, kernel_cols = (k.to(hover)[None, None] for k in official_gradient_kernels())
    pad = kernel_rows.shape[-1] // 2
    horizontal = torch.nn.functional.conv2d(hover[:, 0:1], kernel_rows, padding=pad)
    vertical = torch.nn.functional.conv2d(hover[:, 1:2], kernel_cols, padding=pad)
    return torch.cat([horizontal, vertical], dim=1)


def hovernet_loss(protocol: str = "official", weights: dict | None = None):
    """MONAI's ``HoVerNetLoss`` with the official weights; under the ``official`` protocol
    its gradient term takes the official kernels (``official_gradients``), under ``clean``
    MONAI's normalised Sobel along each map's own axis. The other terms are the official
    ones either way (cross-entropy, Dice summed over classes with 1e-3 smoothing, MSE)."""
    import_monai()
    from monai.apps.pathology.losses import HoVerNetLoss

    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown HoVer-Net protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    if protocol == "clean":
        return HoVerNetLoss(**(weights or OFFICIAL_LOSS_WEIGHTS))

    class OfficialGradientHoVerNetLoss(HoVerNetLoss):
        def _compute_sobel(self, image: torch.Tensor) -> torch.Tensor:
            return official_gradients(image)

    return OfficialGradientHoVerNetLoss(**(weights or OFFICIAL_LOSS_WEIGHTS))


# hover_net's process_np_hv: Sobel kernel 21 on the distance maps, objects and markers under
# 10 px removed, markers where the border energy stays below 0.4, opened with a radius-2 disk.
OFFICIAL_POST_PROCESSING = {"sobel_kernel_size": 21, "min_object_size": 10, "marker_threshold": 0.4, "marker_radius": 2}


def instances(output: dict[str, torch.Tensor], post_processing: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One image's instance and type maps from the network's outputs (logits, without the
    batch axis), by MONAI's HoVer-Net post-processing (marker-controlled watershed on the
    nucleus probability and the gradients of the distance maps; each nucleus typed by the
    majority of its pixels' types). ``post_processing``: its sizes and thresholds
    (:data:`OFFICIAL_POST_PROCESSING` by default)."""
    import_monai()
    from monai.apps.pathology.transforms.post.array import (
        HoVerNetInstanceMapPostProcessing,
        HoVerNetNuclearTypePostProcessing,
    )

    options = {**OFFICIAL_POST_PROCESSING, **(post_processing or {})}
    info, inst_map = HoVerNetInstanceMapPostProcessing(activation="softmax", **options)(output[NP], output[HV])
    _, type_map = HoVerNetNuclearTypePostProcessing(activation="softmax")(output[NC], info, inst_map)
    return np.asarray(inst_map).squeeze().astype(np.int32), np.asarray(type_map).squeeze().astype(np.int32)
