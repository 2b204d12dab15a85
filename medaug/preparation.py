"""Preparation of every dataset to one 2D representation per paper (spec §1.2, §2, §3).

Outputs are folders written atomically; each holds TSV tables (one row per case and per
slice/patch/image, with patient ids kept), the arrays, and a ``meta.json``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from medaug import __version__
from medaug.datasets import classification_dataset, nuclei_dataset, segmentation_dataset
from medaug.errors import DatasetError
from medaug.io import atomic_output, write_json

log = logging.getLogger(__name__)


def pixel_digest(pixels: np.ndarray) -> str:
    """SHA-256 of an image's pixels and shape: the same image saved twice (under another
    name, class or format) gets the same digest; ``medaug.splits`` reports such pairs."""
    pixels = np.ascontiguousarray(pixels)
    digest = hashlib.sha256(str((pixels.shape, pixels.dtype.str)).encode())
    digest.update(pixels.tobytes())
    return digest.hexdigest()


def _resize(stack: np.ndarray, size: int, order: int) -> np.ndarray:
    from skimage.transform import resize

    target = (stack.shape[0], size, size)
    if order == 0:
        return resize(stack, target, order=0, anti_aliasing=False, preserve_range=True).astype(stack.dtype)
    # As the official code: bilinear, skimage's default anti-aliasing when shrinking.
    return resize(stack.astype(np.float32), target, order=1, preserve_range=True)


def normalize_slices(
    image: np.ndarray,
    size: int,
    clip_percentiles: tuple[float, float] = (0.5, 99.5),
    intensity_floor: float | None = None,
) -> np.ndarray:
    """Intensity pipeline of the segmentation representation (spec §1.2): resize in-plane,
    clip each slice to its percentiles (lower bound at least ``intensity_floor``), scale to
    [-1, 1]."""
    resized = _resize(image, size, order=1)
    low = np.percentile(resized, clip_percentiles[0], axis=(1, 2), keepdims=True)
    high = np.percentile(resized, clip_percentiles[1], axis=(1, 2), keepdims=True)
    if intensity_floor is not None:
        low = np.maximum(low, intensity_floor)
        high = np.maximum(high, low)
    span = high - low
    scaled = np.where(span > 0, 2 * (np.clip(resized, low, high) - low) / np.where(span > 0, span, 1) - 1, -1.0)
    return scaled.astype(np.float32)


def resize_masks(mask: np.ndarray, size: int) -> np.ndarray:
    return _resize(mask, size, order=0)


def _write_table(path: Path, rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    table.to_csv(path, sep="\t", index=False)
    return table


def prepare_segmentation(
    name: str,
    entry: dict,
    out_dir: str | Path,
    image_size: int,
    clip_percentiles: tuple[float, float],
    ct_intensity_floor: float | None,
    positive_slice_min_pixels: int | None,
) -> dict:
    """Slice, resize and normalise a segmentation dataset (the segmentation representation).

    Writes ``cases.tsv``, ``slices.tsv`` (with ``positive`` marking the slices that train
    the models), ``arrays/<case>.npz`` (``image`` in [-1, 1], ``mask`` at ``image_size``,
    ``mask_native`` at the original in-plane size for full-resolution scoring) and
    ``meta.json``.
    """
    dataset = segmentation_dataset(entry)
    refs = dataset.cases()
    floor = ct_intensity_floor if entry.get("modality") == "CT" else None
    volume = entry["format"] == "msd"  # 2D images are always kept whole
    case_rows, slice_rows = [], []
    with atomic_output(out_dir, directory=True) as tmp:
        (tmp / "arrays").mkdir()
        for ref in tqdm(refs, desc=f"prepare {name}", unit="case"):
            case = dataset.load(ref)
            image = normalize_slices(case.image, image_size, clip_percentiles, floor)
            mask = resize_masks(case.mask, image_size)
            np.savez_compressed(tmp / "arrays" / f"{ref.case_id}.npz", image=image, mask=mask, mask_native=case.mask)
            foreground = (mask > 0).reshape(mask.shape[0], -1).sum(axis=1)
            case_rows.append(
                {
                    "case_id": ref.case_id,
                    "patient_id": ref.patient_id,
                    "group": ref.group,
                    "n_slices": mask.shape[0],
                    "native_rows": case.mask.shape[1],
                    "native_cols": case.mask.shape[2],
                    "spacing_slice": case.spacing[0],
                    "spacing_row": case.spacing[1],
                    "spacing_col": case.spacing[2],
                    "source_image": str(ref.files["image"]),
                    "source_label": ";".join(str(p) for k, p in ref.files.items() if k != "image"),
                    "pixel_sha256": pixel_digest(case.image),
                }
            )
            for index, pixels in enumerate(foreground):
                positive = not volume or positive_slice_min_pixels is None or pixels > positive_slice_min_pixels
                slice_rows.append(
                    {
                        "slice_id": f"{ref.case_id}_{index:03d}",
                        "case_id": ref.case_id,
                        "patient_id": ref.patient_id,
                        "slice_index": index,
                        "foreground_pixels": int(pixels),
                        "positive": bool(positive),
                    }
                )
        cases = _write_table(tmp / "cases.tsv", case_rows)
        slices = _write_table(tmp / "slices.tsv", slice_rows)
        empty = cases.case_id[~cases.case_id.isin(slices.case_id[slices.positive])]
        if len(empty):
            log.warning(
                "%d case(s) have no positive slice and only serve as full-volume test cases: %s",
                len(empty),
                ", ".join(empty),
            )
        meta = {
            "dataset": name,
            "format": entry["format"],
            "modality": entry.get("modality"),
            "root": str(entry["root"]),
            "labels": {str(k): v for k, v in dataset.labels.items()},
            "image_size": image_size,
            "clip_percentiles": list(clip_percentiles),
            "intensity_floor": floor,
            "positive_slice_min_pixels": positive_slice_min_pixels,
            "n_cases": len(cases),
            "n_slices": len(slices),
            "n_positive_slices": int(slices.positive.sum()),
            "medaug_version": __version__,
        }
        write_json(tmp / "meta.json", meta)
    log.info(
        "%s: %d cases, %d slices (%d positive) -> %s", name, len(cases), len(slices), meta["n_positive_slices"], out_dir
    )
    return meta


def grid_origins(length: int, size: int, stride: int) -> list[int]:
    """Patch origins along one axis; the last patch is aligned to the border."""
    origins = list(range(0, length - size + 1, stride))
    if origins[-1] != length - size:
        origins.append(length - size)
    return origins


def prepare_nuclei(name: str, entry: dict, out_dir: str | Path, patch_size: int, patch_stride: int) -> dict:
    """Tiles -> HoVer-Net style patches (DiffMix representation).

    Writes ``tiles/<tile>.npz`` (image, inst_map, merged type_map, inst_type,
    inst_centroid), ``patches/<patch>.npy`` as [P, P, 5] = RGB, instance, type (int32, the
    HoVer-Net training format), ``tiles.tsv``, ``patches.tsv`` and ``meta.json``. A tile
    is a case (``case_id``), so splits are per tile.
    """
    dataset = nuclei_dataset(entry)
    refs = dataset.cases()
    classes = [v for v in dataset.labels if v != 0]
    tile_rows, patch_rows = [], []
    with atomic_output(out_dir, directory=True) as tmp:
        (tmp / "tiles").mkdir()
        (tmp / "patches").mkdir()
        for ref in tqdm(refs, desc=f"prepare {name}", unit="tile"):
            tile = dataset.load(ref)
            rows, cols = tile.inst_map.shape
            if min(rows, cols) < patch_size:
                raise DatasetError(
                    ref.files["image"], f"tile {rows}x{cols} is smaller than diffmix.patch_size {patch_size}"
                )
            np.savez_compressed(
                tmp / "tiles" / f"{ref.case_id}.npz",
                image=tile.image,
                inst_map=tile.inst_map,
                type_map=tile.type_map,
                inst_type=tile.inst_type,
                inst_centroid=tile.inst_centroid,
            )
            counts = {f"n_type_{c}": int((tile.inst_type == c).sum()) for c in classes}
            tile_rows.append(
                {
                    "case_id": ref.case_id,
                    "patient_id": ref.patient_id,
                    "split": ref.group,
                    "rows": rows,
                    "cols": cols,
                    "n_nuclei": int(tile.inst_type.size),
                    **counts,
                    "source_image": str(ref.files["image"]),
                    "source_label": str(ref.files["label"]),
                    "pixel_sha256": pixel_digest(tile.image),
                }
            )
            stacked = np.concatenate(
                [tile.image.astype(np.int32), tile.inst_map[..., None], tile.type_map[..., None].astype(np.int32)],
                axis=2,
            )
            for row in grid_origins(rows, patch_size, patch_stride):
                for col in grid_origins(cols, patch_size, patch_stride):
                    patch_id = f"{ref.case_id}_{row:04d}_{col:04d}"
                    patch = stacked[row : row + patch_size, col : col + patch_size]
                    np.save(tmp / "patches" / f"{patch_id}.npy", patch)
                    patch_rows.append(
                        {
                            "patch_id": patch_id,
                            "case_id": ref.case_id,
                            "patient_id": ref.patient_id,
                            "split": ref.group,
                            "row": row,
                            "col": col,
                            "n_nuclei": int(np.count_nonzero(np.unique(patch[..., 3]))),
                        }
                    )
        tiles = _write_table(tmp / "tiles.tsv", tile_rows)
        patches = _write_table(tmp / "patches.tsv", patch_rows)
        meta = {
            "dataset": name,
            "format": entry["format"],
            "root": str(entry["root"]),
            "labels": {str(k): v for k, v in dataset.labels.items()},
            "rare_class": 1,
            "patch_size": patch_size,
            "patch_stride": patch_stride,
            "n_tiles": len(tiles),
            "n_patches": len(patches),
            "nuclei_per_class": {str(c): int(tiles[f"n_type_{c}"].sum()) for c in classes},
            "medaug_version": __version__,
        }
        write_json(tmp / "meta.json", meta)
    log.info("%s: %d tiles -> %d patches of %d px -> %s", name, len(tiles), len(patches), patch_size, out_dir)
    return meta


def prepare_classification(name: str, entry: dict, out_dir: str | Path, image_size: int) -> dict:
    """Grey images resized to ``image_size`` (D-Cube representation).

    Writes ``images.npz`` (``image``: N×S×S uint8, in ``images.tsv`` row order),
    ``images.tsv`` (case id, class, class index, official split if any) and ``meta.json``.
    """
    dataset = classification_dataset(entry)
    refs = dataset.cases()
    classes = list(dict.fromkeys(r.group for r in refs))
    rows, images, digests = [], [], []
    for ref in tqdm(refs, desc=f"prepare {name}", unit="image"):
        grey = dataset.load_image(ref)
        digests.append(pixel_digest(grey))
        images.append(np.clip(_resize(grey[None], image_size, order=1)[0], 0, 255).round().astype(np.uint8))
        rows.append(
            {
                "case_id": ref.case_id,
                "patient_id": ref.patient_id,
                "label": ref.group,
                "label_index": classes.index(ref.group),
                "source_split": ref.extra.get("split") or "",
                "source_image": str(ref.files["image"]),
                "pixel_sha256": digests[-1],
            }
        )
    with atomic_output(out_dir, directory=True) as tmp:
        np.savez_compressed(tmp / "images.npz", image=np.stack(images))
        table = _write_table(tmp / "images.tsv", rows)
        meta = {
            "dataset": name,
            "format": entry["format"],
            "root": str(entry["root"]),
            "classes": classes,
            "image_size": image_size,
            "official_test_split": dataset.has_official_test,
            "images_per_class": {c: int((table.label == c).sum()) for c in classes},
            "medaug_version": __version__,
        }
        write_json(tmp / "meta.json", meta)
    log.info("%s: %d images in %d classes -> %s", name, len(table), len(classes), out_dir)
    return meta


# Representation name -> the function that writes it (prepare(name, entry, out_dir, **settings)).
# Which of its tables splits read: medaug.splits.TABLES, under the same names.
REPRESENTATIONS: dict[str, Callable[..., dict]] = {
    "segmentation": prepare_segmentation,
    "nuclei": prepare_nuclei,
    "classification": prepare_classification,
}


def prepare(representation: str, out_dir: str | Path, settings: dict) -> dict:
    """Write ``settings['name']``'s dataset in ``representation`` to ``out_dir``."""
    return REPRESENTATIONS[representation](out_dir=out_dir, **settings)
