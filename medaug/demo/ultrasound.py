"""BUSI-like breast ultrasound demo in the Dataset_BUSI_with_GT layout.

Layout as distributed: ``<root>/{benign,malignant,normal}/<class> (N).png`` (RGB), with
``<class> (N)_mask.png`` (0/255) and, for multifocal cases, ``<class> (N)_mask_1.png``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from medaug.demo.shapes import ellipse, irregular_blob, smooth_noise, to_uint8
from medaug.io import write_png


def _tissue(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Layered breast tissue echogenicity: skin line, fat, fibroglandular layer, depth loss."""
    rows = np.linspace(0, 1, shape[0], dtype=np.float32)[:, None]
    skin = 0.9 * np.exp(-(((rows - 0.04) / 0.02) ** 2))
    gland_top = rng.uniform(0.25, 0.4)
    gland = 0.55 / (1 + np.exp(-(rows - gland_top) / 0.03)) * (1 - 1 / (1 + np.exp(-(rows - 0.85) / 0.05)))
    texture = 0.15 * smooth_noise(rng, shape, sigma=3.0)
    attenuation = np.exp(-0.8 * rows)
    return (0.25 + skin + gland + texture) * attenuation


def _speckle(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Multiplicative Rayleigh speckle, slightly correlated as in real B-mode images."""
    speckle = rng.rayleigh(scale=1.0, size=image.shape).astype(np.float32)
    speckle = ndimage.gaussian_filter(speckle, 0.7)
    return image * speckle / speckle.mean()


def _lesion(rng: np.random.Generator, shape: tuple[int, int], malignant: bool) -> np.ndarray:
    center = (rng.uniform(0.25, 0.7) * shape[0], rng.uniform(0.2, 0.8) * shape[1])
    radius = rng.uniform(0.12, 0.2) * min(shape)
    if malignant:
        return irregular_blob(rng, shape, center, radius, roughness=rng.uniform(0.2, 0.35))
    radii = (radius * rng.uniform(0.6, 0.9), radius * rng.uniform(1.0, 1.4))
    return ellipse(shape, center, radii, angle=rng.uniform(-0.3, 0.3))


def _render(rng: np.random.Generator, shape: tuple[int, int], lesions: list[np.ndarray], malignant: bool) -> np.ndarray:
    image = _tissue(rng, shape)
    for lesion in lesions:
        image[lesion] = 0.06 + 0.03 * rng.standard_normal(int(lesion.sum()))
        # Posterior acoustic enhancement (benign cysts) or shadowing (malignant masses).
        below = ndimage.binary_dilation(lesion, structure=np.ones((9, 1)), iterations=max(shape[0] // 12, 1))
        below &= ~lesion
        below &= np.cumsum(lesion, axis=0) > 0
        image[below] *= 0.55 if malignant else 1.45
    image = _speckle(rng, ndimage.gaussian_filter(image, 0.6))
    return to_uint8(image, 0.0, 1.6)


def write_busi_demo(root: Path, rng: np.random.Generator, params: dict) -> None:
    for class_name, count in params["images_per_class"].items():
        folder = root / class_name
        folder.mkdir(parents=True)
        for number in range(1, count + 1):
            shape = tuple(int(s) for s in rng.integers(params["min_size"], params["max_size"] + 1, size=2))
            malignant = class_name == "malignant"
            lesions = []
            if class_name != "normal":
                lesions.append(_lesion(rng, shape, malignant))
                if rng.random() < params["multi_lesion_fraction"]:
                    keep_out = ndimage.binary_dilation(lesions[0], iterations=2)
                    for _attempt in range(20):
                        second = _lesion(rng, shape, malignant)
                        if not (second & keep_out).any():
                            lesions.append(second)
                            break
            image = _render(rng, shape, lesions, malignant)
            stem = folder / f"{class_name} ({number})"
            # Real BUSI stores the grey scan as an RGB PNG.
            write_png(f"{stem}.png", np.repeat(image[..., None], 3, axis=2))
            primary = lesions[0] if lesions else np.zeros(shape, dtype=bool)
            write_png(f"{stem}_mask.png", primary.astype(np.uint8) * 255)
            for extra, lesion in enumerate(lesions[1:], start=1):
                write_png(f"{stem}_mask_{extra}.png", lesion.astype(np.uint8) * 255)
