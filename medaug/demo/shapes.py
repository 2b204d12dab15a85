"""Shape and texture primitives shared by the demo generators."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def ellipse(
    shape: tuple[int, int], center: tuple[float, float], radii: tuple[float, float], angle: float = 0.0
) -> np.ndarray:
    """Boolean filled ellipse on a (rows, cols) grid; ``angle`` in radians."""
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    dy, dx = rows - center[0], cols - center[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u = (dx * cos + dy * sin) / max(radii[1], 1e-3)
    v = (-dx * sin + dy * cos) / max(radii[0], 1e-3)
    return u * u + v * v <= 1.0


def irregular_blob(
    rng: np.random.Generator,
    shape: tuple[int, int],
    center: tuple[float, float],
    radius: float,
    roughness: float,
    harmonics: int = 7,
) -> np.ndarray:
    """Star-shaped blob whose radius is modulated by random angular harmonics.

    ``roughness`` 0 gives a disc; ~0.3 gives the lobulated, spiculated outline of a
    malignant lesion.
    """
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    dy, dx = rows - center[0], cols - center[1]
    theta = np.arctan2(dy, dx)
    distance = np.hypot(dy, dx)
    boundary = np.ones_like(theta)
    for k in range(2, harmonics + 2):
        amplitude = roughness * rng.uniform(0.2, 1.0) / np.sqrt(k - 1)
        boundary += amplitude * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return distance <= radius * np.clip(boundary, 0.3, None)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian noise smoothed to correlation length ``sigma``."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return (noise - noise.mean()) / (noise.std() + 1e-6)


def to_uint8(image: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((image - low) / (high - low) * 255.0, 0, 255).round().astype(np.uint8)
