"""D-Cube-style classification tree: ``<root>/{Train,Test}/<class>/*.png`` (grey).

Pancreas-CT-like slices: an abdomen with a gland; NORMAL has a homogeneous gland,
BENIGN a round well-defined fluid cyst, MALIGNANT a larger irregular, mildly hypodense
mass with a dilated duct. Classes are imbalanced as configured.

The classes differ in lesion shape and density, not in texture. A briefly trained
generator's samples carry leftover noise, and with a heterogeneous mass (an earlier
stand-in) the real-data classifier called every noisy sample MALIGNANT, so that no
class's samples could be told apart (README, D-Cube demo results).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from medaug.demo.shapes import ellipse, irregular_blob, smooth_noise, to_uint8
from medaug.io import write_png


def _slice(rng: np.random.Generator, size: int, label: str) -> np.ndarray:
    shape = (size, size)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    body = ellipse(shape, (size / 2, size / 2), (size * 0.36, size * 0.46))
    hu[body] = -80.0
    hu[ellipse(shape, (size / 2, size / 2), (size * 0.32, size * 0.42))] = 35.0
    gland_center = (size * rng.uniform(0.45, 0.52), size * rng.uniform(0.45, 0.55))
    gland_radii = (size * rng.uniform(0.11, 0.13), size * rng.uniform(0.22, 0.26))
    gland = ellipse(shape, gland_center, gland_radii, angle=rng.uniform(-0.4, 0.4))
    hu[gland] = 95.0
    hu[ellipse(shape, (size * 0.68, size / 2), (size * 0.05, size * 0.05))] = 600.0  # vertebra
    offset = (rng.uniform(-0.2, 0.2) * gland_radii[0], rng.uniform(-0.3, 0.3) * gland_radii[1])
    lesion_center = (gland_center[0] + offset[0], gland_center[1] + offset[1])
    # A wide gland with lesions of a few pixels at the demo's 24 px, near the gland's middle,
    # so that a small generator trained for a minute draws them where the gland is.
    if label == "BENIGN":
        cyst = ellipse(shape, lesion_center, (size * rng.uniform(0.1, 0.12),) * 2)
        hu[cyst] = -10.0
    elif label == "MALIGNANT":
        mass = irregular_blob(rng, shape, lesion_center, size * rng.uniform(0.14, 0.17), roughness=0.35)
        hu[mass] = 50.0
        duct = ellipse(shape, gland_center, (size * 0.02, gland_radii[1] * 0.8), angle=0.0) & gland & ~mass
        hu[duct] = 5.0
    hu += 8.0 * smooth_noise(rng, shape, 1.2) + 10.0 * rng.standard_normal(shape).astype(np.float32)
    hu = ndimage.gaussian_filter(hu, 0.5)
    # Abdominal soft-tissue window (W 400, L 40), as exported PNGs usually are.
    return to_uint8(hu, -160.0, 240.0)


def write_class_tree_demo(root: Path, rng: np.random.Generator, params: dict) -> None:
    for split, counts in (("Train", params["train_per_class"]), ("Test", params["test_per_class"])):
        for label, count in counts.items():
            folder = root / split / label
            folder.mkdir(parents=True)
            for number in range(1, count + 1):
                write_png(folder / f"{label.lower()}_{number:04d}.png", _slice(rng, params["size"], label))
