"""CoNSeP- and GLySAC-like H&E tiles with HoVer-Net style ``.mat`` nuclei labels.

Layout as distributed: ``<root>/{Train,Test}/Images/<tile>.png`` (CoNSeP) or ``.tif``
(GLySAC) and ``<root>/{Train,Test}/Labels/<tile>.mat`` with ``inst_map`` (H×W, 0 = background,
instances 1..N), ``type_map`` (H×W raw type per pixel), ``inst_type`` (N×1) and
``inst_centroid`` (N×2, x then y). Maps are stored as doubles, as MATLAB wrote the originals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image
from scipy import ndimage

from medaug.demo.shapes import ellipse, smooth_noise

# Raw type -> (relative frequency, radii range in px, elongation, darkness 0..1).
# CoNSeP types: 1 other, 2 inflammatory, 3 healthy epithelial, 4 dysplastic/malignant
# epithelial, 5 fibroblast, 6 muscle, 7 endothelial. "other" is the rare class.
CONSEP_TYPES = {
    1: (0.03, (3.0, 5.0), 1.3, 0.6),
    2: (0.22, (2.0, 2.8), 1.0, 0.95),
    3: (0.13, (3.5, 5.0), 1.2, 0.55),
    4: (0.27, (4.0, 6.0), 1.3, 0.7),
    5: (0.17, (1.8, 2.5), 2.8, 0.8),
    6: (0.10, (1.8, 2.5), 3.2, 0.75),
    7: (0.08, (1.6, 2.2), 2.5, 0.8),
}
# GLySAC raw types 1..10; merged by DiffMix as other {1,2,9,10}, epithelial {4,5,6,7},
# lymphocyte {3,8}.
GLYSAC_TYPES = {
    1: (0.01, (3.0, 5.0), 1.4, 0.6),
    2: (0.01, (3.0, 4.5), 1.2, 0.65),
    3: (0.25, (2.0, 2.8), 1.0, 0.95),
    4: (0.14, (3.5, 5.5), 1.3, 0.6),
    5: (0.14, (3.5, 5.5), 1.3, 0.65),
    6: (0.12, (3.5, 5.0), 1.2, 0.6),
    7: (0.12, (4.0, 6.0), 1.3, 0.7),
    8: (0.19, (2.0, 2.6), 1.0, 0.9),
    9: (0.01, (2.5, 4.0), 2.0, 0.7),
    10: (0.01, (2.5, 4.0), 1.5, 0.7),
}
RARE_TYPES = {"consep": (1,), "glysac": (1, 2, 9, 10)}


def _stroma(rng: np.random.Generator, size: int) -> np.ndarray:
    """Eosin-pink background with fibrous texture and white lumen gaps, float RGB 0..1."""
    texture = smooth_noise(rng, (size, size), 2.5)
    lumen = smooth_noise(rng, (size, size), 8.0) > 1.4
    pink = np.array([0.93, 0.68, 0.80], dtype=np.float32)
    image = pink[None, None] * (1 + 0.06 * texture[..., None])
    image[lumen] = np.array([0.97, 0.94, 0.96], dtype=np.float32)
    return image


def _tile(rng: np.random.Generator, size: int, types: dict, rare: tuple[int, ...]) -> tuple[np.ndarray, dict]:
    image = _stroma(rng, size)
    inst_map = np.zeros((size, size), dtype=np.int32)
    type_map = np.zeros((size, size), dtype=np.int32)
    type_ids = np.array(list(types))
    freq = np.array([types[t][0] for t in type_ids])
    n_target = int(size * size / 180)
    # Every tile carries at least one rare nucleus so that GradMix has donors.
    planned = list(rng.choice(rare, size=1)) + list(rng.choice(type_ids, size=n_target, p=freq / freq.sum()))
    inst_type, centroids = [], []
    hematoxylin = np.array([0.32, 0.20, 0.52], dtype=np.float32)
    for nucleus_type in planned:
        _, (r_lo, r_hi), elongation, darkness = types[int(nucleus_type)]
        radius = rng.uniform(r_lo, r_hi)
        radii = (radius, radius * elongation * rng.uniform(0.8, 1.2))
        half = int(np.ceil(radii[1])) + 2
        for _attempt in range(20):
            center = rng.uniform(half, size - half, size=2)
            top, left = int(center[0]) - half, int(center[1]) - half
            window = (slice(top, top + 2 * half + 1), slice(left, left + 2 * half + 1))
            local = ellipse(
                (2 * half + 1, 2 * half + 1), (center[0] - top, center[1] - left), radii, rng.uniform(0, np.pi)
            )
            if local.sum() >= 4 and not (ndimage.binary_dilation(local) & (inst_map[window] > 0)).any():
                break
        else:
            continue
        shape = np.zeros((size, size), dtype=bool)
        shape[window] = local
        inst_id = len(inst_type) + 1
        inst_map[shape] = inst_id
        type_map[shape] = int(nucleus_type)
        inst_type.append(int(nucleus_type))
        ys, xs = np.nonzero(shape)
        centroids.append((xs.mean(), ys.mean()))
        chromatin = 1 + 0.15 * rng.standard_normal(int(shape.sum()))
        colour = hematoxylin * (1.25 - 0.45 * darkness)
        image[shape] = np.clip(colour[None] * chromatin[:, None], 0, 1)
    image = ndimage.gaussian_filter(image, sigma=(0.7, 0.7, 0))
    image += 0.015 * rng.standard_normal(image.shape).astype(np.float32)
    rgb = np.clip(image * 255, 0, 255).round().astype(np.uint8)
    label = {
        "inst_map": inst_map.astype(np.float64),
        "type_map": type_map.astype(np.float64),
        "inst_type": np.array(inst_type, dtype=np.int32).reshape(-1, 1),
        "inst_centroid": np.array(centroids, dtype=np.float64).reshape(-1, 2),
    }
    return rgb, label


def _write_nuclei(root: Path, rng: np.random.Generator, params: dict, dataset: str) -> None:
    types = CONSEP_TYPES if dataset == "consep" else GLYSAC_TYPES
    extension = ".png" if dataset == "consep" else ".tif"
    for split, count in (("Train", params["train_tiles"]), ("Test", params["test_tiles"])):
        (root / split / "Images").mkdir(parents=True)
        (root / split / "Labels").mkdir(parents=True)
        for number in range(1, count + 1):
            name = f"{split.lower()}_{number}"
            rgb, label = _tile(rng, params["tile_size"], types, RARE_TYPES[dataset])
            Image.fromarray(rgb).save(root / split / "Images" / f"{name}{extension}")
            scipy.io.savemat(root / split / "Labels" / f"{name}.mat", label, do_compression=True)


def write_consep_demo(root: Path, rng: np.random.Generator, params: dict) -> None:
    _write_nuclei(root, rng, params, "consep")


def write_glysac_demo(root: Path, rng: np.random.Generator, params: dict) -> None:
    _write_nuclei(root, rng, params, "glysac")
