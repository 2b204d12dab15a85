"""DiffMix: virtual label maps, the SDM, SDEdit, HoVer-Net and the nuclei metrics."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import ndimage

from medaug.diffmix.label_maps import (
    LabelMap,
    away_from_border,
    balancing_map,
    enlarging_map,
    make_virtual_maps,
    nuclei,
)
from medaug.report.figures import layout_problems

BALANCING = {
    "rare_class": 1,
    "border_px": 30,
    "replace_fraction": 0.8,
    "size_ratio": 2.3,
    "dilation_iterations": 2,
    "same_tile_donors_first": True,
}
REPO = Path(__file__).resolve().parents[1]
ENLARGING = {"added_fraction": 0.5, "gap_px": 2, "class_balanced": True, "tries_per_nucleus": 20}


def disks(shape, nuclei_spec):
    """LabelMap and stored centroids of disks given as (x, y, radius, type)."""
    rows, cols = np.indices(shape)
    inst_map = np.zeros(shape, dtype=np.int32)
    for index, (x, y, radius, _) in enumerate(nuclei_spec):
        inst_map[(cols - x) ** 2 + (rows - y) ** 2 <= radius**2] = index + 1
    labels = LabelMap(inst_map, np.array([t for *_, t in nuclei_spec], dtype=np.uint8))
    return labels, labels.centroids()


def tile_with(majors, rares, shape=(160, 160), seed=0):
    """Majors (type 2-4) of radius 6 on a grid inside the border, plus rare nuclei."""
    rng = np.random.default_rng(seed)
    spec = [(40 + 20 * (i % 5), 40 + 20 * (i // 5), 6, int(rng.integers(2, 5))) for i in range(majors)]
    spec += [(12 + 18 * i, 150, 3, 1) for i in range(rares)]  # near the bottom edge
    return disks(shape, spec)


def test_away_from_border_is_the_official_30_px_test():
    centroids = np.array([[29.9, 80], [30, 80], [130, 130], [80, 130.1], [np.nan, np.nan]])
    assert away_from_border(centroids, (160, 160), 30).tolist() == [False, True, True, False, False]


def test_balancing_replaces_majors_by_smaller_rare_donors_each_once():
    target, target_centroids = tile_with(majors=20, rares=0)
    donor_a, donor_a_centroids = disks((160, 160), [(60 + 12 * i, 60, 2, 1) for i in range(6)])
    donor_b, donor_b_centroids = disks((160, 160), [(60 + 12 * i, 90, 3, 1) for i in range(6)] + [(80, 120, 7, 1)])
    donors = {
        "target": [],
        "a": nuclei("a", donor_a, donor_a_centroids, {1}, 30),
        "b": nuclei("b", donor_b, donor_b_centroids, {1}, 30),
    }
    before = target.class_counts([1, 2, 3, 4])
    virtual, edits = balancing_map("target", target, target_centroids, donors, np.random.default_rng(0), BALANCING)
    after = virtual.class_counts([1, 2, 3, 4])

    # 80 % of 20 majors are picked (16); 12 donors are small enough (the radius-7 one never
    # fits), so the pool runs dry after 12 replacements and 4 picked majors stay.
    assert len(edits) == 12 and after[1] == before[1] + 12
    assert sum(after[c] for c in (2, 3, 4)) == sum(before[c] for c in (2, 3, 4)) - 12
    assert virtual.count == target.count
    used = [(e.donor_tile, e.donor_instance) for e in edits]
    assert len(set(used)) == len(used), "a donor served twice in one map"
    # Each donor is at least 2.3 times smaller than the major dilated twice (radius 6 -> 8).
    dilated_area = np.count_nonzero(np.hypot(*np.indices((17, 17)) - 8) <= 8)
    assert all(2.3 * e.donor_area <= dilated_area + 8 for e in edits) and max(e.donor_area for e in edits) == 29
    # Smallest donors are not preferred: the first fitting donor in pool order is taken.
    assert {e.donor_tile for e in edits} == {"a", "b"}
    # The type map follows the instance types, and every pasted nucleus sits where its major was.
    assert set(np.unique(virtual.type_map()[virtual.inst_map > 0])) <= {1, 2, 3, 4}
    # grad_mix.py's placement: box top-left at round(centroid) - ceil(side / 2), so an odd
    # box (these disks) lands one pixel up and left of centred.
    replaced = virtual.centroids()[virtual.inst_type == 1]
    offsets = replaced[:, None, :] - target_centroids[None, :, :]
    assert (np.abs(offsets + 1).max(axis=2) < 1e-9).any(axis=1).all()


def test_balancing_leaves_border_nuclei_and_majors_without_a_fitting_donor():
    spec = [(10, 80, 6, 2), (80, 80, 6, 3), (80, 40, 2, 2)]
    target, centroids = disks((160, 160), spec)
    big_rare, big_centroids = disks((160, 160), [(80, 80, 6, 1)])  # too large for any major
    donors = {"target": [], "other": nuclei("other", big_rare, big_centroids, {1}, 30)}
    settings = {**BALANCING, "replace_fraction": 1.0}
    virtual, edits = balancing_map("target", target, centroids, donors, np.random.default_rng(0), settings)
    assert edits == [] and np.array_equal(virtual.inst_map, target.inst_map)


def test_same_tile_donors_come_first_unless_switched_off():
    spec = [(60, 60, 6, 2), (100, 60, 2, 1)]
    target, centroids = disks((160, 160), spec)
    other, other_centroids = disks((160, 160), [(60, 60, 2, 1)])
    donors = {
        "target": nuclei("target", target, centroids, {1}, 30),
        "other": nuclei("other", other, other_centroids, {1}, 30),
    }
    settings = {**BALANCING, "replace_fraction": 1.0}
    _, edits = balancing_map("target", target, centroids, donors, np.random.default_rng(0), settings)
    assert [e.donor_tile for e in edits] == ["target"]
    settings["same_tile_donors_first"] = False
    _, edits = balancing_map("target", target, centroids, donors, np.random.default_rng(0), settings)
    assert [e.donor_tile for e in edits] == ["other"]


def test_enlarging_adds_class_balanced_nuclei_in_free_background_only():
    target, _ = tile_with(majors=10, rares=0, shape=(200, 200))
    pool_map, pool_centroids = disks((160, 160), [(40 + 30 * i, 80, 3, 1 + i % 4) for i in range(4)])
    donors = {"target": [], "pool": nuclei("pool", pool_map, pool_centroids, {1, 2, 3, 4}, 0)}
    virtual, edits = enlarging_map("target", target, donors, np.random.default_rng(0), ENLARGING)
    assert len(edits) == 5 and virtual.count == target.count + 5
    assert [e.donor_type for e in edits] == [1, 2, 3, 4, 1]  # classes in turn
    # The original nuclei are untouched, and every added one keeps a gap to all others.
    assert np.array_equal(virtual.inst_map[target.inst_map > 0] > 0, np.ones((target.inst_map > 0).sum(), bool))
    from scipy import ndimage

    for instance in range(target.count + 1, virtual.count + 1):
        grown = ndimage.binary_dilation(virtual.inst_map == instance, iterations=2)
        assert set(np.unique(virtual.inst_map[grown])) <= {0, instance}


@pytest.mark.parametrize("kind", ["balancing", "enlarging"])
def test_virtual_maps_draw_donors_from_training_tiles_only(kind, tmp_path):
    prepared = tmp_path / "prepared"
    (prepared / "tiles").mkdir(parents=True)
    for name, seed in (("train_1", 0), ("train_2", 1), ("train_3", 3), ("test_1", 2)):
        labels, centroids = tile_with(majors=15, rares=0, seed=seed)
        if name != "train_1":  # rare donors in a training, a validation and a test tile
            extra, _ = disks((160, 160), [(40 + 20 * i, 120, 2, 1) for i in range(5)])
            labels = LabelMap(
                np.where(extra.inst_map > 0, extra.inst_map + labels.count, labels.inst_map),
                np.concatenate([labels.inst_type, extra.inst_type]),
            )
            centroids = labels.centroids()
        np.savez(
            prepared / "tiles" / f"{name}.npz",
            inst_map=labels.inst_map,
            inst_type=labels.inst_type,
            inst_centroid=centroids,
        )
    settings = {**BALANCING, "enlarging": ENLARGING}
    splits = {"folds": [{"train": ["train_1", "train_2"], "val": ["train_3"], "test": ["test_1"]}]}
    maps, edits = make_virtual_maps(prepared, splits, 0, kind, settings, seed=0)
    assert set(maps) == {"train_1", "train_2"}
    assert len(edits) > 0 and set(edits.donor_tile) <= {"train_1", "train_2"}
    again, edits_again = make_virtual_maps(prepared, splits, 0, kind, settings, seed=0)
    assert edits.equals(edits_again) and all(np.array_equal(maps[t].inst_map, again[t].inst_map) for t in maps)


# --- HoVer-Net metrics against hand-computed values ----------------------------------------


def squares(shape, spec):
    """Instance and type maps of 5x5 squares given as (top, left, type)."""
    inst, kind = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
    for index, (top, left, t) in enumerate(spec):
        inst[top : top + 5, left : left + 5] = index + 1
        kind[top : top + 5, left : left + 5] = t
    return inst, kind


def test_nuclei_metrics_match_hand_computed_values():
    """True A (type 2), B (type 3), C (type 1); predicted A shifted by a pixel (IoU 20/30,
    right type), B missed, C exact but typed 2, and a false positive D of type 1."""
    from medaug.metrics.nuclei import TypeCounts, score_image, score_set

    true_inst, true_type = squares((40, 40), [(5, 5, 2), (20, 20, 3), (5, 25, 1)])
    pred_inst, pred_type = squares((40, 40), [(5, 6, 2), (5, 25, 2), (30, 5, 1)])
    counts = TypeCounts()
    image = score_image(true_inst, true_type, pred_inst, pred_type, counts)
    assert image["dice"] == pytest.approx(90 / 150)
    assert image["aji"] == pytest.approx((20 + 0 + 25) / (30 + 25 + 25 + 25))
    assert image["dq"] == pytest.approx(2 / 3)
    assert image["sq"] == pytest.approx((20 / 30 + 1) / 2, abs=1e-6)
    assert image["pq"] == pytest.approx(2 / 3 * (20 / 30 + 1) / 2, abs=1e-6)
    assert counts.detection_f1() == pytest.approx(4 / 6)
    assert counts.type_accuracy() == pytest.approx(0.5)
    assert counts.type_f1(1) == pytest.approx(0.0)  # its one true nucleus typed 2, and a false positive
    assert counts.type_f1(2) == pytest.approx(2 / (2 + 2))  # one right, one true type-1 called 2
    assert counts.type_f1(3) == pytest.approx(0.0)  # its one nucleus missed
    # Pooled over two copies of the image: the same ratios; image-averaged metrics unchanged.
    summary = score_set([(true_inst, true_type, pred_inst, pred_type)] * 2, types=[1, 2, 3])
    assert summary["f1_detection"] == pytest.approx(4 / 6) and summary["f1_type2"] == pytest.approx(0.5)
    assert summary["aji"] == pytest.approx(45 / 105)


def test_centroid_pairing_keeps_pairs_within_12_px_only():
    from medaug.metrics.nuclei import pair_centroids

    true = np.array([[10.0, 10.0], [50.0, 50.0]])
    pred = np.array([[10.0, 22.0], [50.0, 62.5]])  # 12 px and 12.5 px away
    true_index, pred_index = pair_centroids(true, pred, 12.0)
    assert true_index.tolist() == [0] and pred_index.tolist() == [0]


# --- the SDM network: the official checkpoint layout ------------------------------------------

FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures"


def test_sdm_at_the_paper_configuration_has_the_official_keys_shapes_and_order():
    """The official UNetModel's state dict at the CoNSeP settings (recorded from
    hvcl/DiffMix) is ours, key for key in the same order, shape for shape; so an official
    checkpoint of that layout loads strictly (on the meta device: no 2.6 GB in the test)."""
    import json

    import torch

    from medaug.diffmix.sdm import SemanticUNet

    fixture = json.loads((FIXTURES / "sdm_consep_keys.json").read_text())
    with torch.device("meta"):
        network = SemanticUNet(image_size=256, label_channels=6)
    ours = [[key, list(value.shape)] for key, value in network.state_dict().items()]
    assert ours == fixture["keys"]
    assert sum(p.numel() for p in network.parameters()) == fixture["parameters"]
    official = {key: torch.empty(shape, device="meta") for key, shape in fixture["keys"]}
    network.load_state_dict(official, strict=True, assign=True)
    with torch.device("meta"):
        glysac = SemanticUNet(image_size=256, label_channels=5)  # 3 classes + background + edge
    assert glysac.state_dict()["middle_block.0.in_norm.mlp_shared.0.weight"].shape == (128, 5, 3, 3)


def tiny_sdm():
    from medaug.diffmix.sdm import SemanticUNet

    return SemanticUNet(
        image_size=32, label_channels=4, model_channels=32, num_res_blocks=1, attention_resolutions=(8,),
        channel_mult=(1, 2), num_head_channels=16,
    )  # fmt: skip


def test_sdm_loads_a_checkpoint_file_and_its_decoder_follows_the_label_map(tmp_path):
    import torch

    from medaug.diffmix.sdm import load_official_checkpoint, semantic_condition

    torch.manual_seed(0)
    source = tiny_sdm()
    for parameter in source.parameters():  # the zero-initialised output layers too
        parameter.data.normal_(0, 0.05)
    torch.save(source.state_dict(), tmp_path / "ema_0.9999_000100.pt")  # guided-diffusion's format
    network = tiny_sdm()
    load_official_checkpoint(network, tmp_path / "ema_0.9999_000100.pt")
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([3, 700])
    types = torch.zeros(2, 1, 32, 32, dtype=torch.long)
    types[..., 8:16, 8:16] = 2
    inst = (types > 0).long()
    y = semantic_condition(types, inst, 3)
    with torch.no_grad():
        out = network(x, t, y)
        assert out.shape == (2, 6, 32, 32) and torch.equal(out, source(x, t, y))
        assert not torch.allclose(out, network(x, t, torch.zeros_like(y)))  # the dropped label differs
    with pytest.raises(ValueError, match="label map"):
        network(x, t, y[:, :3])


def test_sdm_gradient_checkpointing_changes_no_gradient():
    import torch

    from medaug.diffmix.sdm import SemanticUNet, semantic_condition

    torch.manual_seed(0)
    plain = tiny_sdm()
    for parameter in plain.parameters():
        parameter.data.normal_(0, 0.05)
    checkpointed = SemanticUNet(**{**vars(plain.config), "gradient_checkpointing": True})
    checkpointed.load_state_dict(plain.state_dict())
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([3, 700])
    y = semantic_condition(torch.randint(0, 3, (2, 1, 32, 32)), torch.randint(0, 5, (2, 1, 32, 32)), 3)
    grads = []
    for network in (plain, checkpointed):
        network.train()
        network(x, t, y).square().mean().backward()
        grads.append([p.grad.clone() for p in network.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads, strict=True))


def test_semantic_condition_is_one_hot_types_then_both_sides_of_every_instance_edge():
    import torch

    from medaug.diffmix.sdm import semantic_condition

    inst = torch.zeros(1, 1, 6, 6, dtype=torch.long)
    inst[..., 1:3, 1:3] = 1
    inst[..., 1:3, 3:5] = 2  # touching nucleus 1
    types = (inst > 0).long() * 2
    y = semantic_condition(types, inst, 3)
    assert y.shape == (1, 4, 6, 6) and torch.equal(y[:, :3].sum(1), torch.ones(1, 6, 6))
    assert torch.equal(y[0, 2], (types[0, 0] == 2).float())
    edge = y[0, 3]
    assert edge[1, 2] == edge[1, 3] == 1  # both sides of the boundary between two nuclei
    assert edge[0, 1] == edge[1, 1] == 1 and edge[4, 4] == 0 and edge[5, 5] == 0


# --- SDEdit sampling ---------------------------------------------------------------------------

SDEDIT = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "respaced_steps": 100,
    "strength": 0.55,
    "guidance_scale": 1.5,
}


def test_sdedit_starts_at_step_540_and_runs_55_guided_ddim_steps():
    """The official ddim100 at 55 %: the real patch noised to t = 540 (respaced index 54),
    then 55 DDIM steps 540, 530, ..., 0, each on the conditional and the all-zero label map."""
    import torch

    from medaug.diffmix.sampling import sdedit, sdedit_start_step

    assert sdedit_start_step(100, 0.55) == 45
    calls = []

    class Recorder(torch.nn.Module):
        def forward(self, x, t, y):
            calls.append((t.tolist(), y.flatten(1).abs().sum(1).tolist()))
            return torch.zeros(len(x), 6, *x.shape[2:])  # predicts no noise: x0 = x_t / sqrt(abar)

    images = torch.full((2, 3, 8, 8), 0.5)
    y = torch.ones(2, 4, 8, 8)
    out = sdedit(Recorder(), images, y, SDEDIT, torch.Generator().manual_seed(0))
    assert [t[0] for t, _ in calls] == list(range(540, -1, -10)) and len(calls) == 55
    assert all(len(t) == 4 and sums[:2] == [0.0, 0.0] and min(sums[2:]) > 0 for t, sums in calls)
    assert out.shape == images.shape and out.abs().max() <= 1.0  # the clipped x0 of the last step


def test_sdedit_with_a_perfect_noise_predictor_returns_the_real_patch():
    import torch

    from medaug.diffmix.sampling import sdedit_scheduler

    scheduler = sdedit_scheduler(SDEDIT)
    images = torch.rand(1, 3, 8, 8) * 2 - 1
    captured = {}

    class Oracle(torch.nn.Module):
        """Knows the patch: returns the noise that explains x_t from it."""

        def forward(self, x, t, y):
            abar = scheduler.alphas_cumprod[int(t[0])]
            eps = (x - abar.sqrt() * images.repeat(len(x), 1, 1, 1)) / (1 - abar).sqrt()
            captured.setdefault("first", int(t[0]))
            return torch.cat([eps, torch.zeros_like(eps)], dim=1)

    from medaug.diffmix.sampling import sdedit

    out = sdedit(Oracle(), images, torch.ones(1, 4, 8, 8), SDEDIT, torch.Generator().manual_seed(1))
    assert captured["first"] == 540 and torch.allclose(out, images, atol=1e-4)


# --- the learned-variance objective --------------------------------------------------------------


def test_hybrid_loss_is_zero_for_the_true_noise_and_posterior_variance_and_trains_only_v_by_the_bound():
    """v = -1 selects the (clipped) posterior variance; with the true noise the model's
    Gaussian is the posterior, so MSE and KL are 0 (t >= 1). The bound term reaches the
    variance channels only: the noise channels get the MSE gradient alone."""
    import torch

    from medaug.diffusion.objectives import HybridLoss
    from medaug.diffusion.sampling import linear_betas

    loss_fn = HybridLoss(linear_betas(1000, 1e-4, 0.02))
    abar = torch.cumprod(1 - linear_betas(1000, 1e-4, 0.02), 0).float()
    x0, noise = torch.rand(3, 3, 4, 4) * 2 - 1, torch.randn(3, 3, 4, 4)
    t = torch.tensor([1, 500, 999])
    x_t = abar[t].sqrt()[:, None, None, None] * x0 + (1 - abar[t]).sqrt()[:, None, None, None] * noise
    exact = torch.cat([noise, -torch.ones_like(noise)], dim=1)
    assert torch.allclose(loss_fn(exact, x0, x_t, noise, t), torch.zeros(3), atol=1e-4)

    output = torch.cat([noise + 0.1 * torch.randn_like(noise), torch.zeros_like(noise)], dim=1).requires_grad_()
    loss_fn(output, x0, x_t, noise, t).sum().backward()
    mse_grad = 2 * (output[:, :3] - noise) / noise[0].numel()
    assert torch.allclose(output.grad[:, :3], mse_grad.detach(), atol=1e-6)
    assert output.grad[:, 3:].abs().sum() > 0


# --- SDM training ------------------------------------------------------------------------------


def toy_tiles(count=2, size=40, seed=0):
    rng = np.random.default_rng(seed)
    tiles = []
    for index in range(count):
        labels, _ = disks((size, size), [(10 + 20 * (i % 2), 10 + 20 * (i // 2), 4, 1 + i % 3) for i in range(4)])
        image = np.where(labels.inst_map[..., None] > 0, 60, 200) + rng.integers(0, 20, (size, size, 3))
        tiles.append(
            {
                "name": f"train_{index}",
                "image": image.astype(np.uint8),
                "inst_map": labels.inst_map,
                "type_map": labels.type_map(),
            }
        )
    return tiles


def test_tile_crops_visit_every_tile_and_variant_once_per_epoch():
    from medaug.diffmix.generator import TileCrops

    crops = TileCrops(toy_tiles(count=3), 4, 32, 4, 0.0, 1000, seed=0)  # 18 pairs, 16 per epoch
    first = [crops.item(i) for i in range(16)]
    assert len(set(first)) == 16 and {t for t, _ in first} == {0, 1, 2}
    assert [crops.item(i) for i in range(16, 32)] != first  # a new order each epoch


def test_tile_crops_are_deterministic_dihedral_crops_with_the_label_drop():
    import torch

    from medaug.diffmix.generator import TileCrops, dihedral

    square = np.arange(4).reshape(2, 2)
    variants = [dihedral(square, k).tolist() for k in range(6)]
    assert len({str(v) for v in variants}) == 6  # six different views
    crops = TileCrops(toy_tiles(), 4, 32, 8, 0.0, 1000, seed=0)
    first, again = crops(5), crops(5)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert first["image"].shape == (8, 3, 32, 32) and first["condition"].shape == (8, 5, 32, 32)
    assert first["image"].min() >= -1 and first["image"].max() <= 1
    assert (first["condition"].flatten(1).sum(1) > 0).all()
    dropped = TileCrops(toy_tiles(), 4, 32, 8, 1.0, 1000, seed=0)(5)["condition"]
    assert dropped.abs().sum() == 0
    half = TileCrops(toy_tiles(), 4, 32, 64, 0.2, 1000, seed=0)(0)["condition"]
    assert 0 < (half.flatten(1).sum(1) == 0).sum() < 64


def test_sdm_trains_both_stages_and_a_rerun_resumes_without_training_again(tmp_path):
    import torch

    from medaug.diffmix.generator import train_sdm

    settings = {
        "model": {"model_channels": 32, "num_res_blocks": 1, "attention_resolutions": [8], "channel_mult": [1, 2],
                  "num_head_channels": 16, "dropout": 0.0},
        "schedule": {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02},
        "crop_size": 32, "batch_size": 4, "mixed_precision": "no", "ema_decay": 0.9999, "checkpointing_steps": 2,
        "seed": 0,
        "pretrain": {"steps": 3, "learning_rate": 1e-4, "drop_rate": 0.0},
        "finetune": {"steps": 2, "learning_rate": 2e-5, "drop_rate": 0.2},
    }  # fmt: skip
    network, summaries = train_sdm(toy_tiles(), 4, settings, tmp_path / "state")
    assert summaries["pretrain"]["steps_run"] == 3 and summaries["finetune"]["steps_run"] == 2
    assert np.isfinite(summaries["finetune"]["final_loss"])
    weights = {k: v.clone() for k, v in network.state_dict().items()}
    again, rerun = train_sdm(toy_tiles(), 4, settings, tmp_path / "state")
    assert rerun["pretrain"]["steps_run"] == 0 and rerun["finetune"]["steps_run"] == 0
    assert all(torch.equal(weights[k], v) for k, v in again.state_dict().items())


def test_gradmix_image_pastes_the_colour_mixed_donor_and_blends_only_the_ring():
    """grad_mix.py's blend on a toy pair: the pasted nucleus takes the donor's pixels moved
    halfway to the target's mean nuclear colour; outside the dilated major and the pasted
    nucleus nothing changes; the ring between lies between old and new."""
    from medaug.diffmix.label_maps import GradMixImage

    target, target_centroids = disks((100, 100), [(50, 50, 8, 2)])
    donor, donor_centroids = disks((100, 100), [(40, 60, 3, 1)])
    image = np.full((100, 100, 3), 220, dtype=np.uint8)
    image[target.inst_map > 0] = (60, 20, 120)
    donor_image = np.full((100, 100, 3), 200, dtype=np.uint8)
    donor_image[donor.inst_map > 0] = (0, 200, 0)
    donors = {"donor": nuclei("donor", donor, donor_centroids, {1}, border_px=30)}
    blend = GradMixImage(image, target, {"donor": donor_image}, {"donor": donor.inst_map})
    settings = {**BALANCING, "replace_fraction": 1.0, "same_tile_donors_first": False}
    virtual, edits = balancing_map(
        "target", target, target_centroids, donors, np.random.default_rng(0), settings, blend
    )
    assert len(edits) == 1
    pasted = virtual.inst_map > 0
    mixed = (np.array([0, 200, 0]) + np.array([60, 20, 120])) / 2
    assert np.abs(blend.final[pasted].astype(float) - mixed).max() <= 1
    ring = ndimage.binary_dilation(target.inst_map > 0, iterations=2) & ~pasted
    outside = ~ndimage.binary_dilation(target.inst_map > 0, iterations=2 + 5)
    assert np.array_equal(blend.final[outside], image[outside])
    assert not np.array_equal(blend.final[ring], image[ring])


def test_virtual_maps_at_paper_shapes_with_the_paper_settings(tmp_path):
    """config.paper.yaml's label-map settings on 1000 x 1000 tiles of about 900 nuclei (CoNSeP's
    size), both kinds, through the stage function."""
    import yaml

    from medaug.papers import validate_config

    from .conftest import REPO

    settings = validate_config(yaml.safe_load((REPO / "config.paper.yaml").read_text()))["diffmix"]["label_maps"]
    rng = np.random.default_rng(0)
    (tmp_path / "tiles").mkdir()
    for name in ("train_1", "train_2"):
        spec = [
            (16 + 33 * (k % 30), 16 + 33 * (k // 30), int(rng.integers(4, 9)), int(rng.integers(1, 5)))
            for k in range(900)
        ]
        labels, centroids = disks((1000, 1000), spec)
        np.savez(
            tmp_path / "tiles" / f"{name}.npz",
            inst_map=labels.inst_map,
            inst_type=labels.inst_type,
            inst_centroid=centroids,
        )
    splits = {"folds": [{"train": ["train_1", "train_2"], "val": [], "test": []}]}
    for kind in settings["kinds"]:
        maps, edits = make_virtual_maps(tmp_path, splits, 0, kind, settings, seed=0)
        assert len(edits) > 100 and all(m.inst_map.shape == (1000, 1000) for m in maps.values()), kind


# --- HoVer-Net downstream ------------------------------------------------------------------------


def toy_patches(size=64, count=2, seed=0):
    """[N, P, P, 5] patches of dark nuclei (types 1-3) on a bright background."""
    rng = np.random.default_rng(seed)
    patches = []
    for _ in range(count):
        spec = [
            (8 + 16 * (i % 4) + rng.integers(-2, 3), 8 + 16 * (i // 4) + rng.integers(-2, 3), 5, 1 + i % 3)
            for i in range(16)
        ]
        labels, _ = disks((size, size), spec)
        rgb = np.where(labels.inst_map[..., None] > 0, 70, 210) + rng.integers(0, 15, (size, size, 3))
        patches.append(np.concatenate([rgb, labels.inst_map[..., None], labels.type_map()[..., None]], axis=2))
    return np.stack(patches).astype(np.int32)


def test_hovernet_targets_and_post_processing_recover_the_nuclei():
    """The targets of a patch, fed back as if predicted (logits from the one-hot maps),
    come out of MONAI's HoVer-Net post-processing as the same nuclei and types."""
    import torch

    from medaug.diffmix.hovernet import HV, NC, NP, instances, patch_targets
    from medaug.metrics.nuclei import score_set

    patches = toy_patches()
    targets = patch_targets(patches, num_types=4, out_size=64)
    assert targets["image"].shape == (2, 3, 64, 64) and targets["image"].min() >= 0 and targets["image"].max() <= 1
    assert torch.equal(targets[NP].sum(1), torch.ones(2, 64, 64)) and targets[HV].abs().max() <= 1
    assert torch.equal(targets[NC].argmax(1), torch.from_numpy(patches[..., 4].astype(np.int64)))
    cropped = patch_targets(patches, num_types=4, out_size=40)
    assert cropped[NP].shape == (2, 2, 40, 40) and torch.equal(cropped[NC], targets[NC][..., 12:52, 12:52])

    pairs = []
    for i in range(2):
        output = {NP: 10 * targets[NP][i], HV: targets[HV][i], NC: 10 * targets[NC][i]}
        inst_map, type_map = instances(output)
        pairs.append((patches[i, ..., 3], patches[i, ..., 4], inst_map, type_map))
    summary = score_set(pairs, types=[1, 2, 3])
    assert summary["pq"] > 0.9 and summary["f1_detection"] == 1.0 and summary["type_accuracy"] == 1.0


def test_the_light_network_learns_and_fast_mode_takes_256_px_only():
    import torch

    from medaug.diffmix.hovernet import build_network, hovernet_loss, output_size, patch_targets

    torch.manual_seed(0)
    loss_fn = hovernet_loss()
    assert output_size("hovernet", 256) == 164
    with pytest.raises(ValueError, match="256 px"):
        output_size("hovernet", 64)

    light = build_network("light", 4)
    batch = patch_targets(toy_patches(), 4, 64)
    target = {k: v for k, v in batch.items() if k != "image"}
    optimizer = torch.optim.Adam(light.parameters(), 3e-3)
    losses = []
    for _ in range(30):
        loss = loss_fn(light(batch["image"]), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


# --- synthesis and downstream stages ------------------------------------------------------------


def test_crop_origins_are_an_even_grid_read_row_by_row():
    from medaug.diffmix.sampling import crop_origins

    paper = crop_origins(1000, 1000, 256, 100)  # CoNSeP tile, the official 100 patches
    assert len(paper) == 100 and len(set(paper)) == 100
    assert paper[0] == (0, 0) and paper[9] == (0, 744) and paper[-1] == (744, 744)
    assert crop_origins(160, 160, 64, 5) == [(0, 0), (0, 96), (48, 48), (96, 0), (96, 96)]
    with pytest.raises(ValueError, match="smaller than the 64 px patch"):
        crop_origins(60, 160, 64, 4)


def test_contiguous_ids_and_nucleus_contrast():
    from medaug.diffmix.label_maps import contiguous_ids
    from medaug.diffmix.sampling import nucleus_contrast

    inst = np.array([[0, 7, 7], [3, 0, 9]])
    assert contiguous_ids(inst).tolist() == [[0, 2, 2], [1, 0, 3]]
    image = np.full((2, 3, 3), 200, dtype=np.uint8)
    image[inst > 0] = 50
    assert nucleus_contrast(image, inst) == pytest.approx(150 / 255)
    assert np.isnan(nucleus_contrast(image, np.zeros_like(inst)))


def write_pool(folder, kind, count, size=8):
    import pandas as pd

    (folder / "patches").mkdir(parents=True)
    ids = [f"{kind}_{i:03d}" for i in range(count)]
    for i, patch_id in enumerate(ids):
        np.save(folder / "patches" / f"{patch_id}.npy", np.full((size, size, 5), i, dtype=np.int32))
    pd.DataFrame({"patch_id": ids}).to_csv(folder / "manifest.tsv", sep="\t", index=False)
    return folder


def test_synthetic_patches_alternate_map_kinds_and_a_larger_ratio_extends_a_smaller_one(tmp_path):
    from medaug.diffmix.downstream import pick_synthetic
    from medaug.diffmix.params import synthetic_needed

    folders = [write_pool(tmp_path / kind, kind, 5) for kind in ("balancing", "enlarging")]
    small, small_ids = pick_synthetic(folders, 3, seed=0)
    large, large_ids = pick_synthetic(folders, 8, seed=0)
    assert large_ids[:3] == small_ids and np.array_equal(large[:3], small)
    assert [i.split("/")[0] for i in large_ids] == ["balancing", "enlarging"] * 4
    assert len(set(large_ids)) == 8
    with pytest.raises(ValueError, match="raise diffmix.synthesis.patches_per_tile"):
        pick_synthetic(folders, 11, seed=0)
    assert synthetic_needed(0.5, 27) == 14 and synthetic_needed(1, 27) == 27 and synthetic_needed(2, 27) == 54


def centre_crop_network(out):
    """A stand-in network: each branch is the input's red channel cropped to ``out``."""
    import torch

    from medaug.diffmix.hovernet import HV, NC, NP

    class CentreCrop(torch.nn.Module):
        def forward(self, x):
            margin = (x.shape[-1] - out) // 2
            red = x[:, :1, margin : margin + out, margin : margin + out]
            return {NP: red.repeat(1, 2, 1, 1), HV: red.repeat(1, 2, 1, 1), NC: red.repeat(1, 3, 1, 1)}

    return CentreCrop()


@pytest.mark.parametrize(("in_size", "out_size"), [(64, 64), (256, 164)])
def test_tile_prediction_stitches_windows_back_into_the_whole_tile(in_size, out_size):
    from medaug.diffmix.downstream import predict_tile
    from medaug.diffmix.hovernet import NC, NP

    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, (300, 250, 3)).astype(np.uint8)
    logits = predict_tile(centre_crop_network(out_size), tile, in_size, out_size, "cpu")
    assert logits[NP].shape == (2, 300, 250) and logits[NC].shape == (3, 300, 250)
    np.testing.assert_allclose(logits[NP][0].numpy(), tile[..., 0] / 255.0, atol=1e-6)


def test_dihedral8_gives_the_eight_symmetries_of_the_square():
    from medaug.diffmix.downstream import dihedral8

    patch = np.arange(16).reshape(4, 4)
    variants = {dihedral8(patch, v).tobytes() for v in range(8)}
    assert len(variants) == 8


def test_diffmix_config_problems_name_their_keys(tmp_path):
    from medaug.config import load_config
    from medaug.diffmix.params import config_problems, hovernet_runs
    from medaug.errors import ConfigError

    config = load_config([REPO / "config.yaml"], (config_problems,))
    runs = hovernet_runs(config)
    assert {(r["arm"], r["ratio"]) for r in runs} == {("baseline", "0"), ("gradmix", "1"), ("diffmix", "1")}
    config["diffmix"]["hovernet"]["ratios"] = [0.5, 2]
    runs = {(r["arm"], r["ratio"]) for r in hovernet_runs(config)}
    assert runs == {("baseline", "0"), ("gradmix", "0.5"), ("diffmix", "0.5"), ("diffmix", "2")}
    for overlay, message in [
        ({"hovernet": {"network": "hovernet"}}, "diffmix.hovernet.network: hovernet (fast mode) takes 256 px"),
        ({"label_maps": {"kinds": ["balancing"]}}, "diffmix.hovernet.map_kinds: ['enlarging'] not in"),
        ({"hovernet": {"batch_sizes": [8]}}, "diffmix.hovernet.batch_sizes: give one per phase"),
        ({"generator": {"checkpoints": {"consep": "missing.pt"}}}, "diffmix.generator.checkpoints.consep"),
        ({"hovernet": {"ratios": [1, 1]}}, "diffmix.hovernet.ratios: 1 listed more than once"),
        ({"label_maps": {"kinds": ["enlarging"]}, "hovernet": {"map_kinds": ["enlarging"]}}, "gradmix needs balancing"),
        ({"hovernet": {"ratios": [2]}}, "gradmix runs the ratios up to 1"),
    ]:
        path = tmp_path / "overlay.yaml"
        path.write_text(yaml.safe_dump({"diffmix": overlay}))
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config([REPO / "config.yaml", path], (config_problems,))


def test_generator_stage_exports_an_official_checkpoint_without_training(tmp_path):
    import torch

    from medaug.diffmix.generator import load_generator, train_generator
    from medaug.stage import Job

    torch.manual_seed(0)
    source = tiny_sdm()
    for parameter in source.parameters():
        parameter.data.normal_(0, 0.05)
    torch.save(source.state_dict(), tmp_path / "ema_0.9999_010000.pt")
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "meta.json").write_text('{"labels": {"0": "background", "1": "other", "2": "epithelial"}}')
    (tmp_path / "splits.json").write_text('{"folds": [{"train": ["a"], "val": [], "test": []}]}')
    model = dict(vars(source.config))
    settings = {
        "crop_size": 32, "model": {k: model[k] for k in ("model_channels", "num_res_blocks", "attention_resolutions",
                                                         "channel_mult", "num_head_channels")},
        "schedule": {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02},
        "checkpoint": str(tmp_path / "ema_0.9999_010000.pt"), "state_dir": str(tmp_path / "state"), "seed": 0,
    }  # fmt: skip
    job = Job(
        {"prepared": str(prepared), "splits": str(tmp_path / "splits.json")},
        {"generator": str(tmp_path / "generator")},
        settings,
        {"dataset": "consep"},
    )
    record = train_generator(job)
    assert record["training"] is None and not (tmp_path / "state").exists()
    network, meta = load_generator(tmp_path / "generator")
    assert meta["checkpoint"].endswith("ema_0.9999_010000.pt")
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in network.state_dict().items())


def test_diffmix_stages_run_the_paper_configuration_at_256_px(tmp_path):
    """Every DiffMix stage of config.paper.yaml at paper shapes (256 px crops and patches,
    the SDM's levels and attention resolutions, MONAI's HoVer-Net in fast mode with its
    two phases and window-by-window tile prediction), on 256 px CoNSeP tiles. Only steps,
    epochs, counts, batches and the SDM's width are cut."""
    import pandas as pd
    import torch
    from snakemake.utils import update_config

    from medaug.demo import write_demo_dataset
    from medaug.diffmix import params
    from medaug.diffmix.downstream import train_hovernet
    from medaug.diffmix.generator import load_generator, train_generator
    from medaug.diffmix.label_maps import _write_maps
    from medaug.diffmix.sampling import synthesize
    from medaug.papers import validate_config
    from medaug.preparation import prepare_nuclei
    from medaug.splits import make_splits
    from medaug.stage import Job

    merged = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(merged, yaml.safe_load((REPO / "config.paper.yaml").read_text()))
    model = {"model_channels": 32, "spade_hidden": 32}
    generator = {"batch_size": 1, "model": model, "pretrain": {"steps": 1}, "finetune": {"steps": 1}}
    cut = {
        "generator": generator,
        "synthesis": {"patches_per_tile": 1, "respaced_steps": 4, "batch_size": 2},
        "hovernet": {"epochs": [1], "batch_sizes": [16]},  # the phase loop once
    }
    update_config(merged, {"diffmix": cut})
    config = validate_config(merged)
    assert config["diffmix"]["patch_size"] == config["diffmix"]["generator"]["crop_size"] == 256
    assert config["diffmix"]["hovernet"]["network"] == "hovernet"

    root = write_demo_dataset(tmp_path / "CoNSeP", 0, {"train_tiles": 2, "test_tiles": 1, "tile_size": 256})
    entry = {**config["datasets"]["consep"], "root": str(root)}
    prepared = tmp_path / "prepared"
    prepare_nuclei("consep", entry, prepared, 256, config["diffmix"]["patch_stride"])
    splits = make_splits("consep", prepared, "nuclei", params.split_settings(config, "consep"))
    (tmp_path / "splits.json").write_text(json.dumps(splits))
    data = {"prepared": str(prepared), "splits": str(tmp_path / "splits.json")}

    for kind in ("balancing", "enlarging"):
        wildcards = {"map_kind": kind, "dataset": "consep"}
        _write_maps(Job(data, {"maps": str(tmp_path / "maps" / kind)}, params.label_map_settings(config), wildcards))
    settings = {**params.generator_settings(config, "consep"), "state_dir": str(tmp_path / "sdm_state")}
    train_generator(Job(data, {"generator": str(tmp_path / "sdm")}, settings, {"dataset": "consep"}))
    network, _ = load_generator(tmp_path / "sdm")
    assert network.config.image_size == 256 and network.config.channel_mult == [1, 1, 2, 2, 4, 4]
    for kind in ("balancing", "enlarging"):
        inputs = {"prepared": str(prepared), "generator": str(tmp_path / "sdm"), "maps": str(tmp_path / "maps" / kind)}
        wildcards = {"dataset": "consep", "map_kind": kind}
        outputs = {"synthetic": str(tmp_path / "syn" / kind)}
        summary = synthesize(Job(inputs, outputs, params.synthesis_settings(config), wildcards))
        assert summary["patches"] == 1
        patch_id = pd.read_csv(tmp_path / "syn" / kind / "manifest.tsv", sep="\t").patch_id[0]
        assert np.load(tmp_path / "syn" / kind / "patches" / f"{patch_id}.npy").shape == (256, 256, 5)

    torch.manual_seed(0)
    wildcards = {"dataset": "consep", "arm": "diffmix", "ratio": "1", "seed": "0"}
    inputs = {**data, "synthetic": [str(tmp_path / "syn" / kind) for kind in ("balancing", "enlarging")]}
    record = train_hovernet(
        Job(inputs, {"metrics": str(tmp_path / "metrics.json")}, params.hovernet_settings(config, "diffmix"), wildcards)
    )
    assert record["real_patches"] == record["synthetic_patches"] == 1
    assert set(record["metrics"]) >= {"dice", "aji", "pq", "f1_detection", "f1_type1"}
    assert record["per_tile"][0]["true_nuclei"] > 0  # a whole 256 px tile, predicted window by window


def _official_msge_by_hand(true, pred, focus):
    """The official HoVer-Net ``msge_loss``, written out with scipy on (H, W) arrays: kernel
    entries h / (h² + v²) and v / (h² + v²) for h the row offset and v the column offset,
    the first on channel 0, cross-correlated with zero padding; the squared gradient
    differences summed where ``focus`` is set, over twice the focus area."""
    from scipy.signal import correlate2d

    offsets = np.arange(-2, 3, dtype=np.float64)
    h, v = np.meshgrid(offsets, offsets, indexing="ij")
    kernels = (h / (h * h + v * v + 1e-15), v / (h * h + v * v + 1e-15))
    total, area = 0.0, 0.0
    for n in range(true.shape[0]):
        for channel, kernel in enumerate(kernels):
            grad_true = correlate2d(true[n, channel], kernel, mode="same", boundary="fill")
            grad_pred = correlate2d(pred[n, channel], kernel, mode="same", boundary="fill")
            total += float((focus[n] * (grad_pred - grad_true) ** 2).sum())
        area += 2 * float(focus[n].sum())
    return total / (area + 1e-8)


def test_official_protocol_takes_the_official_gradient_loss_and_clean_takes_monais():
    import torch

    from medaug.diffmix.hovernet import HV, NP, hovernet_loss, patch_targets

    batch = patch_targets(toy_patches(), 4, 64)
    true = batch[HV]
    focus = batch[NP][:, 1]
    torch.manual_seed(0)
    pred = (true + 0.3 * torch.randn_like(true)).clamp(-1, 1)
    official = hovernet_loss("official")._mse_gradient_loss(pred, true, focus)
    clean = hovernet_loss("clean")._mse_gradient_loss(pred, true, focus)
    by_hand = _official_msge_by_hand(true.double().numpy(), pred.double().numpy(), focus.double().numpy())
    assert float(official) == pytest.approx(by_hand, rel=1e-4)
    # MONAI's normalised Sobel along each map's own axis gives a far smaller term.
    assert float(official) > 5 * float(clean)
    with pytest.raises(ValueError, match="unknown HoVer-Net protocol"):
        hovernet_loss("paper")


# The figures' HoVer-Net runs: (baseline seeds, seeds of each synthetic arm and ratio).
SEED_COUNTS = [(1, 1), (3, 3), (3, 1)]


def hovernet_runs(baseline_seeds: int, arm_seeds: int):
    """run_frame's columns for two datasets with their own classes (CoNSeP's four, GLySAC's
    three): the baseline, and gradmix and diffmix at ratios 0.5 and 1 (diffmix also at 2)."""
    import pandas as pd

    classes = {
        "consep": ["other", "inflammatory", "epithelial", "spindle"],
        "glysac": ["other", "epithelial", "lymphocyte"],
    }
    groups = [
        ("baseline", 0.0),
        ("gradmix", 0.5),
        ("gradmix", 1.0),
        ("diffmix", 0.5),
        ("diffmix", 1.0),
        ("diffmix", 2.0),
    ]
    rows = []
    for dataset, names in classes.items():
        for arm, ratio in groups:
            for seed in range(baseline_seeds if arm == "baseline" else arm_seeds):
                scores = {f"F_c {name}": 0.3 + 0.1 * k + 0.05 * ratio - 0.03 * seed for k, name in enumerate(names)}
                row = {"dataset": dataset, "arm": arm, "ratio": ratio, "seed": seed, "rare": "other"}
                rows.append(row | scores | {"F_c rare": scores["F_c other"]})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("baseline_seeds", "arm_seeds"), SEED_COUNTS)
def test_f1_per_class_draws_error_bars_only_over_several_seeds(tmp_path, baseline_seeds, arm_seeds):
    from medaug.diffmix.report import f1_per_class_figure

    several = min(baseline_seeds, arm_seeds) > 1
    figure = f1_per_class_figure(hovernet_runs(baseline_seeds, arm_seeds), tmp_path / "f1.png")
    assert (tmp_path / "f1.png").stat().st_size > 0
    assert layout_problems(figure) == []
    panels = {ax.get_title().split(" ")[0]: ax for ax in figure.axes}
    assert panels.keys() == {"consep", "glysac"}
    # A bar per class and arm/ratio in each panel (seaborn's containers), each dataset its own classes.
    assert [len(c) for c in panels["consep"].containers] == [4] * 6
    assert [len(c) for c in panels["glysac"].containers] == [3] * 6
    assert [t.get_text() for t in panels["glysac"].get_xticklabels()] == ["other", "epithelial", "lymphocyte"]
    # seaborn's barplot draws each error bar as a line of its own and no other line.
    assert [len(ax.lines) for ax in panels.values()] == ([24, 18] if several else [0, 0])
    assert all(("one seed" in ax.get_title()) == (baseline_seeds == arm_seeds == 1) for ax in panels.values())
    assert [ax.get_legend() for ax in figure.axes] == [None, None]
    (legend,) = figure.legends
    arms = ["baseline", "diffmix ×0.5", "gradmix ×0.5", "diffmix ×1", "gradmix ×1", "diffmix ×2"]
    assert [t.get_text() for t in legend.get_texts()] == arms


@pytest.mark.parametrize(("baseline_seeds", "arm_seeds"), SEED_COUNTS)
def test_rare_f1_figure_draws_a_line_per_dataset_and_arm_from_the_baseline(tmp_path, baseline_seeds, arm_seeds):
    import matplotlib.container

    from medaug.diffmix.report import rare_f1_figure

    figure = rare_f1_figure(hovernet_runs(baseline_seeds, arm_seeds), tmp_path / "rare.png")
    assert (tmp_path / "rare.png").stat().st_size > 0
    assert layout_problems(figure) == []
    (ax,) = figure.axes
    # The drawn lines: not the markers and caps that ax.errorbar adds without a line style, nor
    # the empty lines that seaborn adds for the legend's entries.
    lines = [line for line in ax.lines if line.get_linestyle() != "None" and len(line.get_xdata())]
    # consep and glysac, each with gradmix (0, 0.5, 1) and diffmix (0, 0.5, 1, 2).
    assert sorted(list(line.get_xdata()) for line in lines) == [[0, 0.5, 1]] * 2 + [[0, 0.5, 1, 2]] * 2
    bars = [c for c in ax.containers if isinstance(c, matplotlib.container.ErrorbarContainer)]
    assert len(bars) == (4 if min(baseline_seeds, arm_seeds) > 1 else 0)
    assert ("one seed" in ax.get_title()) == (baseline_seeds == arm_seeds == 1)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "0.5", "1", "2"]
    legend_entries = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend_entries == ["dataset", "consep", "glysac", "arm", "diffmix", "gradmix"]


def test_figures_without_hovernet_runs_say_so(tmp_path):
    import pandas as pd

    from medaug.diffmix.report import f1_per_class_figure, rare_f1_figure

    for draw in (f1_per_class_figure, rare_f1_figure):
        figure = draw(pd.DataFrame(), tmp_path / "empty.png")
        assert layout_problems(figure) == []
        assert [t.get_text() for ax in figure.axes for t in ax.texts] == ["no HoVer-Net runs"]


def test_samples_figure_shows_the_crops_with_the_most_rare_nuclei_per_dataset_and_map_kind(tmp_path):
    import pandas as pd

    from medaug.diffmix.paths import SYNTHETIC_MANIFEST, SYNTHETIC_QUALITY
    from medaug.diffmix.report import SAMPLE_ROWS, samples_figure

    rng = np.random.default_rng(0)
    prepared, folders = {}, []
    for dataset in ("consep", "glysac"):
        tiles = tmp_path / dataset / "prepared" / "tiles"
        tiles.mkdir(parents=True)
        np.savez(tiles / "tile0.npz", image=rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        prepared[dataset] = str(tiles.parent)
        for kind in ("balancing", "enlarging"):
            folder = tmp_path / dataset / kind
            (folder / "patches").mkdir(parents=True)
            rows = []
            for index in range(SAMPLE_ROWS + 1):  # one patch more than the figure shows
                patch = np.concatenate([rng.integers(0, 255, (32, 32, 3)), rng.integers(0, 5, (32, 32, 2))], axis=-1)
                np.save(folder / "patches" / f"tile0_{index:03d}.npy", patch.astype(np.int32))
                row = {"patch_id": f"tile0_{index:03d}", "source_tile": "tile0", "top": 8 * index, "left": 0}
                rows.append(row | {"n_rare": index})
            pd.DataFrame(rows).to_csv(folder / SYNTHETIC_MANIFEST, sep="\t", index=False)
            (folder / SYNTHETIC_QUALITY).write_text(json.dumps({"dataset": dataset, "map_kind": kind}))
            folders.append(str(folder))

    figure = samples_figure(folders, prepared, tmp_path / "samples.png")
    assert (tmp_path / "samples.png").stat().st_size > 0
    assert layout_problems(figure) == []
    rows = np.array(figure.axes).reshape(-1, 3)
    assert len(rows) == 4 * SAMPLE_ROWS
    # Column titles over the top row only; each row named by its dataset and map kind.
    assert [ax.get_title() for ax in rows[0]] == ["real crop", "virtual map (types as colours)", "synthetic"]
    assert not any(ax.get_title() for ax in rows[1:].flat)
    assert [ax.get_ylabel() for ax in rows[::SAMPLE_ROWS, 0]] == [
        "consep\nbalancing",
        "consep\nenlarging",
        "glysac\nbalancing",
        "glysac\nenlarging",
    ]
    # Per folder, the patches with the most rare nuclei first (index 0, the fewest, left out),
    # each beside the real crop it was rendered from.
    for folder, panels in zip(folders, rows.reshape(4, SAMPLE_ROWS, 3), strict=True):
        dataset = Path(folder).parent.name
        with np.load(Path(prepared[dataset]) / "tiles" / "tile0.npz") as data:
            tile = data["image"]
        for index, (real, _, synthetic) in zip((3, 2, 1), panels, strict=True):
            patch = np.load(Path(folder) / "patches" / f"tile0_{index:03d}.npy")
            assert np.array_equal(synthetic.get_images()[0].get_array(), patch[..., :3].astype(np.uint8))
            assert np.array_equal(real.get_images()[0].get_array(), tile[8 * index : 8 * index + 32, :32])
