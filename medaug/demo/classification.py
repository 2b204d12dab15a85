"""D-Cube-style classification tree: ``<root>/{Train,Test}/<class>/*.png`` (grey).

Pancreas-CT-like crops around the gland, in peripancreatic fat: NORMAL has a homogeneous
enhancing gland, BENIGN a round fluid cyst in the body or tail (image left), MALIGNANT an
irregular hypoenhancing mass in the head (image right). Classes are imbalanced as configured.

The classes differ in where the lesion lies and how dark it is, over a large part of the
image, not in fine detail: a small U-ViT trained for a couple of CPU-minutes learns such
class means first, while its samples still carry patch-sized noise. Lesions of a few
pixels inside a low-contrast gland (an earlier stand-in) were drawn too faintly, and the
real-data classifier's verdict on the samples then changed with the seed and the CPU's
float kernels (docs/demo-results.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from medaug.demo.shapes import ellipse, irregular_blob, smooth_noise, to_uint8
from medaug.io import write_png


def _slice(rng: np.random.Generator, size: int, label: str) -> np.ndarray:
    shape = (size, size)
    # A tight crop around the pancreas: peripancreatic fat, the enhancing gland across the
    # middle, the vertebral body at the bottom edge.
    hu = -90.0 + 10.0 * smooth_noise(rng, shape, size * 0.05)
    hu[ellipse(shape, (size * 1.04, size / 2), (size * 0.16, size * 0.14))] = 600.0
    gland_center = (size * rng.uniform(0.44, 0.5), size * rng.uniform(0.47, 0.53))
    gland_radii = (size * rng.uniform(0.19, 0.23), size * rng.uniform(0.4, 0.45))
    angle = rng.uniform(-0.2, 0.2)
    hu[ellipse(shape, gland_center, gland_radii, angle=angle)] = 130.0

    def along_gland(fraction: float) -> tuple[float, float]:
        reach = fraction * gland_radii[1]
        return gland_center[0] + reach * np.sin(angle), gland_center[1] + reach * np.cos(angle)

    # Where a lesion lies is part of what tells it apart, as in the clinic: mucinous cysts
    # mostly in the body and tail (image left), adenocarcinoma mostly in the head (right).
    if label == "BENIGN":
        cyst = ellipse(shape, along_gland(-rng.uniform(0.4, 0.55)), (size * rng.uniform(0.17, 0.21),) * 2)
        hu[cyst] = 5.0
    elif label == "MALIGNANT":
        mass = irregular_blob(rng, shape, along_gland(rng.uniform(0.4, 0.55)), size * rng.uniform(0.19, 0.23), 0.3)
        hu[mass] = 40.0
    hu += 8.0 * rng.standard_normal(shape).astype(np.float32)
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
