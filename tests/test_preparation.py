import json

import numpy as np
import pandas as pd
import pytest

from medaug.datasets import segmentation_dataset
from medaug.datasets.msd import from_display_slices, to_display_slices
from medaug.preparation import (
    grid_origins,
    normalize_slices,
    prepare_classification,
    prepare_nuclei,
    prepare_segmentation,
)

from .conftest import entry_for


def test_normalisation_clips_percentiles_and_scales_to_unit_range():
    rng = np.random.default_rng(0)
    image = rng.normal(0, 100, size=(3, 40, 40)).astype(np.float32)
    image[:, 0, 0] = 1e6  # an outlier must be clipped, not stretch the range
    out = normalize_slices(image, 20)
    assert out.shape == (3, 20, 20) and out.dtype == np.float32
    assert out.min() == pytest.approx(-1) and out.max() == pytest.approx(1)
    assert abs(float(np.median(out))) < 0.2


def test_ct_floor_raises_the_lower_clip_bound():
    image = np.full((1, 16, 16), -1000.0, dtype=np.float32)
    image[0, 4:12, 4:12] = np.linspace(0, 200, 64).reshape(8, 8)
    floored = normalize_slices(image, 16, (0.5, 99.5), intensity_floor=-256)
    plain = normalize_slices(image, 16, (0.5, 99.5), intensity_floor=None)
    # With the floor, air no longer takes most of the range: soft tissue keeps its contrast.
    tissue = (slice(5, 11), slice(5, 11))
    assert np.ptp(floored[0][tissue]) > 2 * np.ptp(plain[0][tissue])
    assert floored.min() == -1
    assert np.all(np.isfinite(normalize_slices(np.full((1, 8, 8), -1000.0), 8, intensity_floor=-256)))


def test_display_orientation_round_trips():
    volume = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    slices = to_display_slices(volume)
    assert slices.shape == (6, 5, 4)
    np.testing.assert_array_equal(from_display_slices(slices), volume)


def test_prepare_segmentation_keeps_patients_and_flags_positive_slices(config, demo_root, tmp_path):
    entry = entry_for(config, "spleen", demo_root / "Task09_Spleen")
    meta = prepare_segmentation("spleen", entry, tmp_path / "prepared", 32, (0.5, 99.5), -256, 20)
    cases = pd.read_csv(tmp_path / "prepared" / "cases.tsv", sep="\t")
    slices = pd.read_csv(tmp_path / "prepared" / "slices.tsv", sep="\t")
    assert len(cases) == config["demo"]["spleen"]["patients"] == meta["n_cases"]
    assert len(slices) == cases.n_slices.sum()
    slices_per_case = slices.groupby("case_id").size().sort_index()
    assert slices_per_case.tolist() == cases.set_index("case_id").n_slices.sort_index().tolist()
    assert (slices.positive == (slices.foreground_pixels > 20)).all()
    assert 0 < slices.positive.sum() < len(slices), "the demo must exercise positive-slice selection"
    first = cases.iloc[0]
    arrays = np.load(tmp_path / "prepared" / "arrays" / f"{first.case_id}.npz")
    assert arrays["image"].shape == arrays["mask"].shape == (first.n_slices, 32, 32)
    assert arrays["image"].min() >= -1 and arrays["image"].max() <= 1
    native = segmentation_dataset(entry).load(
        next(r for r in segmentation_dataset(entry).cases() if r.case_id == first.case_id)
    )
    np.testing.assert_array_equal(arrays["mask_native"], native.mask)
    assert json.loads((tmp_path / "prepared" / "meta.json").read_text())["intensity_floor"] == -256


def test_busi_keeps_every_image_including_normal(config, demo_root, tmp_path):
    entry = entry_for(config, "busi", demo_root / "Dataset_BUSI_with_GT")
    prepare_segmentation("busi", entry, tmp_path / "prepared", 32, (0.5, 99.5), -256, 20)
    slices = pd.read_csv(tmp_path / "prepared" / "slices.tsv", sep="\t")
    assert slices.positive.all()
    assert (slices.foreground_pixels == 0).sum() == config["demo"]["busi"]["images_per_class"]["normal"]


def test_grid_origins_cover_the_tile_with_border_aligned_last_patch():
    assert grid_origins(160, 64, 48) == [0, 48, 96]
    assert grid_origins(100, 64, 48) == [0, 36]
    assert grid_origins(64, 64, 48) == [0]


def test_prepare_nuclei_writes_hovernet_patches(config, demo_root, tmp_path):
    entry = entry_for(config, "consep", demo_root / "CoNSeP")
    prepare_nuclei("consep", entry, tmp_path / "prepared", 64, 48)
    patches = pd.read_csv(tmp_path / "prepared" / "patches.tsv", sep="\t")
    tiles = pd.read_csv(tmp_path / "prepared" / "tiles.tsv", sep="\t")
    assert len(patches) == len(tiles) * 9
    patch = np.load(tmp_path / "prepared" / "patches" / f"{patches.patch_id[0]}.npy")
    assert patch.shape == (64, 64, 5)
    tile = np.load(tmp_path / "prepared" / "tiles" / f"{patches.case_id[0]}.npz")
    row, col = patches.row[0], patches.col[0]
    np.testing.assert_array_equal(patch[..., :3], tile["image"][row : row + 64, col : col + 64])
    np.testing.assert_array_equal(patch[..., 4], tile["type_map"][row : row + 64, col : col + 64])
    assert set(np.unique(patch[..., 4])) <= {0, 1, 2, 3, 4}


def test_prepare_classification_keeps_class_imbalance(config, demo_root, tmp_path):
    entry = entry_for(config, "pancreas", demo_root / "DCube_pancreas")
    meta = prepare_classification("pancreas", entry, tmp_path / "prepared", 32)
    images = np.load(tmp_path / "prepared" / "images.npz")["image"]
    table = pd.read_csv(tmp_path / "prepared" / "images.tsv", sep="\t")
    assert images.shape == (len(table), 32, 32) and images.dtype == np.uint8
    demo = config["demo"]["pancreas"]
    for label, count in demo["train_per_class"].items():
        assert meta["images_per_class"][label] == count + demo["test_per_class"][label]
    assert list(table.label_index.unique()) == [0, 1, 2]
