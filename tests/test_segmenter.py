"""The MONAI arm: random merging mask, joint augmentation, both protocols."""

import json

import numpy as np
import pytest
import torch

from medaug.diffboost.segmenter import Variant, augment, random_merging_mask, train_and_evaluate
from medaug.metrics.segmentation import case_metrics
from medaug.preparation import prepare_segmentation
from medaug.splits import make_splits, role_cases

from .conftest import entry_for

SETTINGS = {
    "channels": [8, 16, 32],
    "strides": [2, 2],
    "epochs": 2,
    "batch_size": 8,
    "learning_rate": 1e-3,
    "eval_every": 1,
    "protocols": ["official", "clean"],
}


def test_merging_mask_is_made_of_whole_cells():
    g = torch.Generator().manual_seed(0)
    mask = random_merging_mask(3, 20, 24, 8, 0.6, g)
    assert mask.shape == (3, 1, 20, 24) and set(mask.unique().tolist()) <= {0.0, 1.0}
    for row in range(0, 20, 8):
        for col in range(0, 24, 8):
            cell = mask[:, :, row : row + 8, col : col + 8]
            assert (cell == cell[:, :, :1, :1]).all(), "a cell mixes real and synthetic pixels"


@pytest.mark.parametrize("alpha,expected", [(0.0, 0.0), (1.0, 1.0)])
def test_merging_mask_extremes(alpha, expected):
    mask = random_merging_mask(2, 16, 16, 4, alpha, torch.Generator().manual_seed(1))
    assert (mask == expected).all()


def test_merging_mask_takes_real_cells_with_probability_alpha():
    mask = random_merging_mask(200, 64, 64, 16, 0.6, torch.Generator().manual_seed(2))
    cells = mask[:, 0, ::16, ::16]
    assert abs(cells.mean().item() - 0.6) < 0.03


def test_pixel_level_patch_size_one_gives_independent_pixels():
    mask = random_merging_mask(1, 32, 32, 1, 0.5, torch.Generator().manual_seed(3))
    assert 0.3 < mask.mean().item() < 0.7 and mask.unique().numel() == 2


def test_spatial_augmentation_moves_image_and_label_together():
    g = torch.Generator().manual_seed(4)
    label = torch.zeros(4, 1, 32, 32)
    label[:, :, 4:12, 20:28] = 1
    image = label * 2 - 1  # the image is its label, so they must stay aligned
    real, synthetic, moved = augment("DiffBoostPlus", image, image.clone(), label, g)
    assert torch.equal(moved.unique(), torch.tensor([0.0, 1.0]))
    agreement = ((real > 0) == (moved > 0.5)).float().mean()
    assert agreement > 0.97
    assert torch.allclose(real, synthetic)  # the same transform for both images


def test_case_metrics_on_a_known_overlap():
    label = np.zeros((2, 10, 10), bool)
    label[:, 2:6, 2:6] = True
    prediction = np.zeros_like(label)
    prediction[:, 2:6, 2:4] = True
    metrics = case_metrics(prediction, label, (5.0, 1.0, 1.0))
    assert metrics["dice"] == pytest.approx(2 * 16 / (16 + 32))
    assert metrics["precision"] == pytest.approx(1.0) and metrics["recall"] == pytest.approx(0.5)
    assert metrics["hd95"] == pytest.approx(2.0)


@pytest.fixture(scope="module")
def prostate(config, demo_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("seg")
    entry = entry_for(config, "prostate", demo_root / "Task05_Prostate")
    prepare_segmentation("prostate", entry, base / "prepared", 32, (0.5, 99.5), None, 5)
    settings = {"scheme": "kfold", "n_folds": 3, "shuffle": False, "val_fraction": 0.2, "seed": 0}
    splits = make_splits("prostate", base / "prepared", "segmentation", settings)
    (base / "splits.json").write_text(json.dumps(splits))
    return base, splits


def test_both_protocols_score_the_real_test_cases(prostate):
    base, splits = prostate
    metrics, record = train_and_evaluate(base / "prepared", splits, 1, Variant("UNet", "RandomGamma"), SETTINGS, 32, 3)
    test = role_cases(splits, 1, "test")
    for protocol in ("official", "clean"):
        scored = metrics[metrics.protocol == protocol]
        assert set(scored.case_id) | set(record["protocols"][protocol]["unscored_cases"]) == test
        assert scored[["dice", "precision", "recall", "hd95"]].notna().all().all()
    official, clean = (metrics[metrics.protocol == p].set_index("case_id").n_slices for p in ("official", "clean"))
    assert (official <= clean.loc[official.index]).all() and (clean > official.loc[clean.index]).any()
    assert record["protocols"]["official"]["train_slices"] > record["protocols"]["clean"]["train_slices"]
