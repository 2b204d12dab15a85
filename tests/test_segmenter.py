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
    assert metrics["dice"] == pytest.approx(2 * 16 / (16 + 32), rel=1e-3)  # official +1e-3 smoothing
    assert metrics["jaccard"] == pytest.approx(16 / 32, rel=1e-3)
    assert metrics["precision"] == pytest.approx(1.0, rel=1e-3) and metrics["recall"] == pytest.approx(0.5, rel=1e-3)
    assert metrics["accuracy"] == pytest.approx(1 - 16 / 200, rel=1e-3)
    assert metrics["hd95"] == pytest.approx(2.0) and metrics["empty_prediction"] == 0


def brute_force_surface_distances(a, b, spacing):
    """Independent of the implementation under test: border voxels by comparing each voxel
    with its face neighbours (outside the array counts as background), distances by cdist."""
    from scipy.spatial.distance import cdist

    def border(mask):
        padded = np.pad(mask, 1)
        inner = np.ones_like(mask)
        for axis in range(mask.ndim):
            for shift in (-1, 1):
                inner &= np.roll(padded, shift, axis=axis)[tuple(slice(1, -1) for _ in range(mask.ndim))]
        return mask & ~inner

    points = [np.argwhere(border(m)) * np.array(spacing) for m in (a, b)]
    return cdist(points[0], points[1]).min(axis=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_and_assd_match_an_independent_implementation_on_anisotropic_volumes(seed):
    from scipy.ndimage import binary_dilation

    rng = np.random.default_rng(seed)
    spacing = (3.0, 0.7, 1.3)
    label = binary_dilation(rng.random((12, 24, 20)) > 0.985, iterations=3)
    prediction = binary_dilation(rng.random((12, 24, 20)) > 0.985, iterations=2) | label[::-1]
    forward = brute_force_surface_distances(prediction, label, spacing)
    backward = brute_force_surface_distances(label, prediction, spacing)
    metrics = case_metrics(prediction, label, spacing)
    # the official (medpy) HD95 pools both directions; the larger directed 95th percentile differs
    assert metrics["hd95"] == pytest.approx(np.percentile(np.hstack([forward, backward]), 95))
    assert metrics["assd"] == pytest.approx((forward.mean() + backward.mean()) / 2)


def test_empty_predictions_centre_rule_officially_and_worst_case_in_the_clean_protocol():
    label = np.zeros((1, 40, 40), bool)
    label[0, 2:8, 2:8] = True
    empty = np.zeros_like(label)
    spacing = (5.0, 1.0, 1.0)
    official = case_metrics(empty, label, spacing, "centre")
    clean = case_metrics(empty, label, spacing, "worst")
    assert official["empty_prediction"] == clean["empty_prediction"] == 1
    assert official["hd95"] < 40  # the distance to the centre voxel: better than many real predictions
    assert clean["hd95"] == clean["assd"] == pytest.approx(np.sqrt(5**2 + 40**2 + 40**2))
    assert clean["dice"] == clean["recall"] == 0
    both_empty = case_metrics(empty, np.zeros_like(label), spacing, "worst")
    assert both_empty["dice"] == 1 and both_empty["hd95"] == 0


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


def test_gamma_and_noise_arms_draw_as_batchgenerators_does():
    from medaug.diffboost.segmenter import _intensity

    n = 4000
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, 101).repeat(n, 1, 1, 1)  # low 0, high 1: out = x ** gamma
    out = _intensity("RandomGamma", ramp, g)
    gamma = torch.log(out[:, 0, 0, 50]) / torch.log(ramp[:, 0, 0, 50])
    assert gamma.min() >= 0.7 - 1e-3 and gamma.max() <= 1.5 + 1e-3
    assert abs((gamma < 1).float().mean().item() - 0.5) < 0.03  # equal odds below and above 1
    flat = torch.zeros(n, 1, 32, 32)
    std = (_intensity("RandomNoise", flat, g) - flat).std(dim=(1, 2, 3))
    assert std.max() < 0.06 and abs(std.mean().item() - 0.025) < 0.002  # the std is drawn from (0, 0.05)


def test_scale_multiplies_the_sampling_coordinates_and_fills_with_the_edge():
    from medaug.diffboost.segmenter import _affine

    image = torch.zeros(1, 1, 64, 64)
    image[:, :, 16:48, 16:48] = 1.0
    label = image.clone()
    for scale, shrinks in ((2.0, True), (0.5, False)):
        moved, moved_label = _affine([image, label], torch.zeros(1), torch.tensor([scale]), torch.ones(1, 2))
        area = moved_label.sum().item()
        assert (area < 32 * 32 / 2) if shrinks else (area > 32 * 32 * 2)
    # outside the field of view: the edge value (here 0 at the border), never a constant -1
    border = torch.full((1, 1, 64, 64), 0.3)
    moved, _ = _affine([border, label], torch.zeros(1), torch.tensor([2.0]), torch.ones(1, 2))
    assert torch.allclose(moved, torch.full_like(moved, 0.3), atol=1e-5)


def test_real_and_synthetic_are_scaled_together():
    real = torch.linspace(-0.5, 0.5, 64).reshape(1, 1, 8, 8)
    synthetic = torch.linspace(-1.0, 0.0, 64).reshape(1, 1, 8, 8)
    label = torch.zeros(1, 1, 8, 8)
    x, x_syn, _ = augment("none", real, synthetic, label, torch.Generator().manual_seed(0))
    both = torch.cat([x, x_syn])
    assert torch.isclose(both.min(), torch.tensor(-1.0)) and torch.isclose(both.max(), torch.tensor(1.0))
    assert x.min() > -0.99 and x_syn.min() == both.min()  # one range for the pair, not one each
    alone, _, _ = augment("none", real, None, label, torch.Generator().manual_seed(0))
    assert torch.isclose(alone.min(), torch.tensor(-1.0)) and torch.isclose(alone.max(), torch.tensor(1.0))


def test_official_selection_dice_pools_each_batch():
    from medaug.diffboost.segmenter import pooled_batch_dice, quick_dice

    label = np.zeros((3, 4, 4), dtype=np.int64)
    label[0, :2] = 1  # 8 pixels
    label[1, 0, 0] = 1  # 1 pixel
    prediction = label.copy()
    prediction[1] = 0  # misses the small one entirely
    # batch of 2: pooled over slices 0-1 = 2*8/(8+9); slice 2 is empty/empty = 1
    expected = (2 * 2 * 8 / 17 + 1 * 1.0) / 3
    assert np.isclose(pooled_batch_dice(prediction, label, 2), expected)
    assert np.isclose(quick_dice(prediction, label), (1 + 0 + 1) / 3)


@pytest.mark.parametrize("architecture,millions", [("ResUNet", 1.65), ("UNETR", 87.6)])
def test_architectures_match_the_official_configs(architecture, millions):
    from medaug.diffboost.segmenter import build_network

    network = build_network(architecture, 384, [16, 32, 64, 128, 128, 256], [2, 2, 2, 2, 2])
    assert abs(sum(p.numel() for p in network.parameters()) / 1e6 - millions) < 0.05


def test_monai_loads_without_transformers_which_stays_importable():
    """A fresh segmenter process skips transformers (TransCheX's optional BERT) while
    importing MONAI, builds every architecture, and can still import transformers."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from medaug.diffboost.segmenter import build_network\n"
        "for a in ('UNet', 'ResUNet', 'AttentionUnet', 'UNETR', 'SwinUNETR'):\n"
        "    build_network(a, 32, [8, 16, 32], [2, 2])\n"
        "print('transformers' in sys.modules)\n"
        "import transformers\n"
        "print(transformers.CLIPTextModel.__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "CLIPTextModel"]
