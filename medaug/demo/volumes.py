"""MSD-like CT spleen (Task09) and MRI prostate (Task05) demo volumes.

Layout as distributed: ``dataset.json``, ``imagesTr/``, ``labelsTr/``, ``imagesTs/`` with
gzipped NIfTI. Volumes are written in an LPS-like voxel order (x and y flipped, negative
diagonal in the affine), as many MSD files are, so readers must reorient.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from medaug.demo.shapes import ellipse, irregular_blob, smooth_noise

SPLEEN_SPACING = (3.0, 3.0, 5.0)
PROSTATE_SPACING = (2.0, 2.0, 3.6)


def _save_nifti(path: Path, canonical: np.ndarray, spacing: tuple[float, float, float]) -> None:
    """Save a RAS-ordered array in flipped (LPS-like) voxel order with a matching affine."""
    sx, sy, sz = spacing
    nx, ny = canonical.shape[:2]
    affine = np.array(
        [
            [-sx, 0, 0, -120.0 + sx * (nx - 1)],
            [0, -sy, 0, -120.0 + sy * (ny - 1)],
            [0, 0, sz, -60.0],
            [0, 0, 0, 1],
        ]
    )
    image = nib.Nifti1Image(np.ascontiguousarray(canonical[::-1, ::-1]), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, path)


def _slab(nz: int, rng: np.random.Generator, coverage: tuple[float, float]) -> tuple[float, float]:
    """Centre and half-height (in slices) of an organ spanning part of the volume."""
    half = rng.uniform(*coverage) * nz / 2
    center = rng.uniform(half, nz - half) if nz > 2 * half else nz / 2
    return center, half


def _organ_scale(z: int, center: float, half: float) -> float:
    t = (z + 0.5 - center) / half
    return float(np.sqrt(max(1.0 - t * t, 0.0)))


def _outline(rng: np.random.Generator, plane: tuple[int, int], radius: float, aspect: float, angle: float):
    """A lobulated organ outline of one patient, drawn at any centre and in-slab scale."""
    base = irregular_blob(rng, (129, 129), (64.0, 64.0), 48.0, roughness=rng.uniform(0.05, 0.2))

    def draw(center: tuple[float, float], scale: float) -> np.ndarray:
        rows, cols = np.mgrid[: plane[0], : plane[1]].astype(np.float32)
        dy, dx = rows - center[0], cols - center[1]
        cos, sin = np.cos(angle), np.sin(angle)
        u = (dx * cos + dy * sin) / (radius * scale)
        v = (-dx * sin + dy * cos) / (radius * scale * aspect)
        iu, iv = np.round(64 + 48 * u).astype(int), np.round(64 + 48 * v).astype(int)
        inside = (iu >= 0) & (iu < 129) & (iv >= 0) & (iv < 129)
        return inside & base[np.clip(iv, 0, 128), np.clip(iu, 0, 128)]

    return draw


def spleen_volume(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """CT in HU (int16) and spleen label (uint8), RAS voxel order."""
    nx, ny, nz = shape
    plane = (nx, ny)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    body_r = (nx * rng.uniform(0.40, 0.46), ny * rng.uniform(0.30, 0.36))
    spleen_c, spleen_h = _slab(nz, rng, (0.45, 0.7))
    liver_c, liver_h = _slab(nz, rng, (0.6, 0.9))
    # Position, size, elongation and outline vary per patient, so that where the organ
    # usually is predicts little: a mean-mask predictor scores Dice < 0.3 (tests/test_demo.py).
    spleen_xy = (nx * rng.uniform(0.25, 0.75), ny * rng.uniform(0.3, 0.7))
    spleen_r = nx * rng.uniform(0.11, 0.17)
    spleen_shape = _outline(rng, plane, spleen_r, rng.uniform(0.5, 1.0), rng.uniform(0, np.pi))
    for z in range(nz):
        body = ellipse(plane, (nx / 2, ny / 2), body_r)
        inner = ellipse(plane, (nx / 2, ny / 2), (body_r[0] - 3, body_r[1] - 3))
        hu[..., z][body] = -90.0  # subcutaneous fat
        hu[..., z][inner] = 40.0  # muscle and soft tissue
        s = _organ_scale(z, liver_c, liver_h)
        if s > 0:
            liver = ellipse(plane, (nx * 0.66, ny * 0.52), (nx * 0.16 * s, ny * 0.2 * s))
            hu[..., z][liver & inner] = 62.0
        spine = ellipse(plane, (nx / 2, ny * 0.26), (nx * 0.06, ny * 0.06))
        canal = ellipse(plane, (nx / 2, ny * 0.26), (nx * 0.025, ny * 0.025))
        hu[..., z][spine & ~canal] = 650.0
        s = _organ_scale(z, spleen_c, spleen_h)
        if s > 0.15:
            spleen = spleen_shape(spleen_xy, s) & inner
            hu[..., z][spleen] = 130.0  # enhanced (portal venous phase)
            label[..., z][spleen] = 1
    hu += 10.0 * smooth_noise(rng, shape, 1.5) + 12.0 * rng.standard_normal(shape).astype(np.float32)
    return np.clip(hu, -1024, 3071).round().astype(np.int16), label


def prostate_volume(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """4D MRI (x, y, z, [T2, ADC]) float32 and label 0 bg / 1 PZ / 2 TZ, RAS voxel order."""
    nx, ny, nz = shape
    plane = (nx, ny)
    t2 = np.zeros(shape, dtype=np.float32)
    adc = np.zeros(shape, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    gland_c, gland_h = _slab(nz, rng, (0.5, 0.75))
    gland_xy = (nx * rng.uniform(0.3, 0.7), ny * rng.uniform(0.32, 0.68))  # varied: see spleen_volume
    gland_r = nx * rng.uniform(0.08, 0.15)
    tissue = {  # name: (T2, ADC)
        "fat": (420.0, 300.0),
        "muscle": (140.0, 1300.0),
        "bone": (90.0, 500.0),
        "rectum": (60.0, 900.0),
        "pz": (380.0, 1500.0),
        "tz": (220.0, 1100.0),
    }

    def paint(region: np.ndarray, z: int, name: str) -> None:
        t2[..., z][region], adc[..., z][region] = tissue[name]

    for z in range(nz):
        body = ellipse(plane, (nx / 2, ny / 2), (nx * 0.45, ny * 0.36))
        paint(body, z, "fat")
        paint(ellipse(plane, (nx / 2, ny / 2), (nx * 0.36, ny * 0.28)) & body, z, "muscle")
        for side in (0.25, 0.75):
            paint(ellipse(plane, (nx * side, ny * 0.5), (nx * 0.07, ny * 0.09)), z, "bone")
        paint(ellipse(plane, (nx / 2, ny * 0.3), (nx * 0.07, ny * 0.06)), z, "rectum")
        s = _organ_scale(z, gland_c, gland_h)
        if s > 0.2:
            r = gland_r * s
            gland = ellipse(plane, gland_xy, (r, r * 0.85))
            tz = ellipse(plane, (gland_xy[0], gland_xy[1] + 0.25 * r), (0.65 * r, 0.55 * r))
            pz = gland & ~tz & (np.arange(ny)[None, :] < gland_xy[1] + 0.2 * r)
            tz = gland & ~pz
            paint(pz, z, "pz")
            paint(tz, z, "tz")
            label[..., z][pz] = 1
            label[..., z][tz] = 2
    t2 *= 1 + 0.08 * smooth_noise(rng, shape, 2.0)
    t2 += 15.0 * rng.standard_normal(shape).astype(np.float32)
    adc += 60.0 * rng.standard_normal(shape).astype(np.float32)
    return np.stack([np.clip(t2, 0, None), np.clip(adc, 0, None)], axis=-1), label


def _write_msd(root: Path, rng: np.random.Generator, params: dict, task: str) -> None:
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True)
    shape = tuple(params["shape"])
    n_train, n_test = params["patients"], params["test_patients"]
    if task == "spleen":
        # MSD spleen case numbers are sparse (spleen_2, spleen_3, spleen_6, ...).
        numbers = np.sort(rng.choice(np.arange(1, 3 * (n_train + n_test) + 1), n_train + n_test, replace=False))
        names = [f"spleen_{n}" for n in numbers]
        make, spacing = spleen_volume, SPLEEN_SPACING
    else:
        names = [f"prostate_{n:02d}" for n in range(n_train + n_test)]
        make, spacing = prostate_volume, PROSTATE_SPACING
    order = rng.permutation(n_train + n_test)
    train_names = [names[i] for i in sorted(order[:n_train])]
    test_names = [names[i] for i in sorted(order[n_train:])]
    for name in train_names + test_names:
        image, label = make(rng, shape)
        split = "Tr" if name in train_names else "Ts"
        _save_nifti(root / f"images{split}" / f"{name}.nii.gz", image, spacing)
        if split == "Tr":
            _save_nifti(root / "labelsTr" / f"{name}.nii.gz", label, spacing)
    if task == "spleen":
        header = {
            "name": "Spleen",
            "description": "Spleen Segmentation (medaug synthetic demo in the MSD Task09 layout)",
            "tensorImageSize": "3D",
            "modality": {"0": "CT"},
            "labels": {"0": "background", "1": "spleen"},
        }
    else:
        header = {
            "name": "PROSTATE",
            "description": "Prostate TZ and PZ segmentation (medaug synthetic demo in the MSD Task05 layout)",
            "tensorImageSize": "4D",
            "modality": {"0": "T2", "1": "ADC"},
            "labels": {"0": "background", "1": "PZ", "2": "TZ"},
        }
    dataset = {
        **header,
        "reference": "medaug demo data, not a real dataset",
        "licence": "CC-BY-SA 4.0",
        "release": "1.0",
        "numTraining": n_train,
        "numTest": n_test,
        "training": [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in train_names],
        "test": [f"./imagesTs/{n}.nii.gz" for n in test_names],
    }
    (root / "dataset.json").write_text(json.dumps(dataset, indent=4) + "\n")


def write_spleen_demo(root: Path, rng: np.random.Generator, params: dict) -> None:
    _write_msd(root, rng, params, "spleen")


def write_prostate_demo(root: Path, rng: np.random.Generator, params: dict) -> None:
    _write_msd(root, rng, params, "prostate")
