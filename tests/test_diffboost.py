"""DiffBoost's generator: no-leak inputs, fine-tuning (killed and resumed), per-ratio
sampling with reuse and exact manifest counts."""

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from medaug.diffboost.generator import finetune_controlnet, sample_synthetic, write_conditions
from medaug.diffboost.params import condition_settings, controlnet_settings, sampling_settings
from medaug.diffboost.slices import (
    development_slices,
    load_slices,
    load_synthetic_pool,
    read_slice_table,
    role_slices,
    shard_path,
)
from medaug.errors import DatasetError
from medaug.papers import validate_config
from medaug.preparation import prepare_segmentation
from medaug.splits import LeakageError, make_splits, role_cases

from .conftest import REPO, entry_for

SPLITS = {"scheme": "kfold", "n_folds": 3, "shuffle": False, "val_fraction": 0.2, "seed": 0}


@pytest.fixture(scope="module")
def demo_config():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["diffboost"]["controlnet"].update(max_steps=4, checkpointing_steps=2, batch_size=4)
    config["diffboost"]["sampling"].update(ddim_steps=2, batch_size=16)
    return validate_config(config)


@pytest.fixture(scope="module")
def spleen(demo_config, demo_root, tmp_path_factory):
    """The demo spleen dataset prepared at the demo size, with conditions and splits."""
    base = tmp_path_factory.mktemp("diffboost") / "spleen"
    entry = entry_for(demo_config, "spleen", demo_root / "Task09_Spleen")
    prepare_segmentation("spleen", entry, base / "prepared", 32, (0.5, 99.5), -256, 5)
    write_conditions(base / "prepared", base / "conditions", condition_settings(demo_config))
    splits = make_splits("spleen", base / "prepared", "segmentation", SPLITS)
    (base / "splits.json").write_text(json.dumps(splits))
    return base, splits


@pytest.fixture(scope="module")
def model(demo_config, spleen):
    base, splits = spleen
    settings = controlnet_settings(demo_config, "spleen")
    info = finetune_controlnet(
        base / "prepared", base / "conditions", splits, 0, out_dir=base / "model", state_dir=base / "state", **settings
    )
    return base / "model", info


def test_generator_inputs_never_include_a_test_patient(spleen, model):
    base, splits = spleen
    slices = pd.read_csv(base / "prepared" / "slices.tsv", sep="\t", dtype={"case_id": str, "patient_id": str})
    test_patients = set(slices.patient_id[slices.case_id.isin(role_cases(splits, 0, "test"))])
    _, info = model
    trained_on = slices[slices.slice_id.isin(info["train_slices"])]
    assert len(trained_on) == len(info["train_slices"]) > 0
    assert test_patients.isdisjoint(trained_on.patient_id)
    assert trained_on.positive.all()


def test_development_slices_refuses_a_leaking_split(spleen):
    base, splits = spleen
    leaking = json.loads(json.dumps(splits))
    leaking["folds"][0]["train"].append(leaking["folds"][0]["test"][0])
    with pytest.raises(LeakageError):
        development_slices(base / "prepared", leaking, 0)


def test_conditions_record_the_edge_method(spleen):
    base, _ = spleen
    meta = json.loads((base / "conditions" / "meta.json").read_text())
    assert meta["method"] == "canny" and meta["hed_weights"] is None
    condition = np.load(next((base / "conditions").glob("*.npz")))["condition"]
    assert condition.shape[1:] == (32, 32) and condition.min() >= 0 and condition.max() <= 1


def test_model_folder_is_a_save_pretrained_layout(model):
    from diffusers import ControlNetModel

    folder, info = model
    assert {"controlnet", "unet", "text_encoder", "tokenizer", "scheduler"} <= {p.name for p in folder.iterdir()}
    ControlNetModel.from_pretrained(folder / "controlnet", local_files_only=True)
    assert info["training"]["steps"] == 4 and info["pixel_space"]


def can_hard_link(folder: Path) -> bool:
    probe = folder / ".link-probe"
    probe.write_text("")
    try:
        os.link(probe, folder / ".link-probe-2")
    except OSError:
        return False
    else:
        (folder / ".link-probe-2").unlink()
        return True
    finally:
        probe.unlink()


@pytest.fixture(scope="module")
def ratios(demo_config, spleen, model):
    """Ratio 1, then ratio 2 built on it, as the pipeline samples them."""
    base, splits = spleen
    folder, _ = model
    sampling = sampling_settings(demo_config)
    inputs = (folder, base / "prepared", base / "conditions", splits, 0)
    first = sample_synthetic(*inputs, 1, None, sampling, base / "syn" / "ratio1")
    second = sample_synthetic(*inputs, 2, base / "syn" / "ratio1", sampling, base / "syn" / "ratio2")
    return base / "syn", first, second


def test_sampling_reuses_smaller_ratios_and_counts_exactly(spleen, ratios):
    base, splits = spleen
    syn, first, second = ratios
    sources = development_slices(base / "prepared", splits, 0)
    assert len(first) == len(sources) and len(second) == 2 * len(sources)
    assert set(second.source_slice_id) == set(sources.slice_id)
    assert (second.groupby("source_slice_id").k.apply(sorted).apply(list) == [[1, 2]] * len(sources)).all()
    counts = json.loads((syn / "ratio2" / "counts.json").read_text())
    assert counts["new_images"] == len(sources) and counts["reused_images"] == len(sources)
    # One shard per image index, its rows in development-slice order: the manifest's index.
    assert sorted(p.name for p in (syn / "ratio1" / "samples").iterdir()) == ["k001.npy"]
    assert sorted(p.name for p in (syn / "ratio2" / "samples").iterdir()) == ["k001.npy", "k002.npy"]
    position = dict(zip(sources.slice_id, range(len(sources)), strict=True))
    assert (second["index"] == second.source_slice_id.map(position)).all()
    # Ratio 2 reuses ratio 1's images (same pixels, same seeds) instead of regenerating them,
    # and holds them itself (a later job reads the folder of its own ratio only) as a hard
    # link to ratio 1's file: no second copy on disk.
    shards = [shard_path(syn / f"ratio{r}", 1) for r in (1, 2)]
    if can_hard_link(syn):  # a filesystem without hard links gets a copy
        assert os.stat(shards[0]).st_ino == os.stat(shards[1]).st_ino
    assert np.array_equal(np.load(shards[0]), np.load(shards[1]))
    reused = second[second.k == 1]
    first_pool, reused_pool = (load_synthetic_pool(syn / f"ratio{r}", 1) for r in (1, 2))
    assert all(np.array_equal(first_pool[s], reused_pool[s]) for s in first_pool)
    assert reused.set_index("synthetic_id").seed.equals(first.set_index("synthetic_id").seed.loc[reused.synthetic_id])
    pool = load_synthetic_pool(syn / "ratio2", 2)
    assert set(pool) == set(sources.slice_id)
    some = next(iter(pool.values()))
    assert some.shape == (2, 32, 32) and np.isfinite(some).all() and np.abs(some).max() <= 1
    # No test-fold slice is a sampling condition.
    test = set(role_cases(splits, 0, "test"))
    assert test.isdisjoint(second.case_id)


def test_a_pool_is_read_through_memory_maps_one_image_at_a_time(ratios):
    """Each slice's images come from the memory-mapped shards, one float32 image per index;
    nothing is loaded whole."""
    syn, _, second = ratios
    pool = load_synthetic_pool(syn / "ratio2", 2)
    shards = [np.load(shard_path(syn / "ratio2", k)) for k in (1, 2)]
    for row in second.itertuples():
        images = pool[row.source_slice_id]
        assert isinstance(images.mapped(row.k - 1), np.memmap) and not images.mapped(row.k - 1).flags.writeable
        image = images[row.k - 1]
        assert type(image) is np.ndarray and image.dtype == np.float32 and image.flags.writeable
        assert np.array_equal(image, shards[row.k - 1][row.index].astype(np.float32))
    images = pool[second.source_slice_id.iloc[0]]
    assert len(images) == 2 and images.shape == (2, 32, 32)
    stacked = np.asarray(images)
    assert stacked.dtype == np.float32 and stacked.shape == (2, 32, 32)
    assert all(np.array_equal(a, b) for a, b in zip(images, stacked, strict=True))
    assert np.array_equal(images[-1], images[1]) and np.array_equal(images[np.int64(1)], images[1])
    with pytest.raises(IndexError):
        images[2]
    # A smaller ratio opens only its own shards.
    assert {len(p) for p in load_synthetic_pool(syn / "ratio2", 1).values()} == {1}


def test_a_failing_sampling_job_leaves_no_output_and_its_previous_ratio_intact(
    demo_config, spleen, model, ratios, monkeypatch, tmp_path
):
    """The sampler fails on its second batch, after the first shard rows and the previous
    ratio's links were written: nothing appears at the output, and the previous ratio's
    files are as they were (their links in the partial folder are gone)."""
    from medaug.diffboost.generator import Sampler

    base, splits = spleen
    folder, _ = model
    syn, _, _ = ratios
    sample = Sampler.sample
    calls = []

    def fail_on_the_second_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the GPU fell over")
        return sample(self, *args, **kwargs)

    monkeypatch.setattr(Sampler, "sample", fail_on_the_second_batch)
    previous = shard_path(syn / "ratio2", 1)
    links = os.stat(previous).st_nlink
    sampling = {**sampling_settings(demo_config), "batch_size": 2}
    out = tmp_path / "synthetic" / "ratio3"
    with pytest.raises(RuntimeError, match="fell over"):
        sample_synthetic(folder, base / "prepared", base / "conditions", splits, 0, 3, syn / "ratio2", sampling, out)
    assert len(calls) == 2
    assert list(out.parent.iterdir()) == []  # neither the output nor its partial folder
    assert os.stat(previous).st_nlink == links
    assert len(load_synthetic_pool(syn / "ratio2", 2)) > 0


def test_a_full_disk_ends_sampling_with_the_one_line_error_and_no_output(
    demo_config, spleen, model, monkeypatch, tmp_path
):
    """Each new shard reserves its blocks before it is written through its map, so a full
    disk is an ordinary error (cleaned up, one line) rather than a SIGBUS mid-write."""
    import errno

    from medaug.errors import OutputError

    base, splits = spleen
    folder, _ = model

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space, raising=False)
    out = tmp_path / "synthetic" / "ratio1"
    sampling = sampling_settings(demo_config)
    with pytest.raises(OutputError, match="no space left"):
        sample_synthetic(folder, base / "prepared", base / "conditions", splits, 0, 1, None, sampling, out)
    assert list(out.parent.iterdir()) == []


def test_a_pool_folder_of_the_old_single_file_layout_is_refused(demo_config, spleen, model, ratios, tmp_path):
    base, splits = spleen
    folder, _ = model
    syn, _, _ = ratios
    old = tmp_path / "ratio1"
    old.mkdir()
    shutil.copy(syn / "ratio1" / "manifest.tsv", old / "manifest.tsv")
    np.savez_compressed(old / "samples.npz", image=np.zeros((3, 32, 32), np.float16))
    with pytest.raises(DatasetError, match="older version") as refused:
        load_synthetic_pool(old, 1)
    assert "\n" not in str(refused.value) and str(old) in str(refused.value)
    # Nor does a larger ratio build on it.
    sampling = sampling_settings(demo_config)
    with pytest.raises(DatasetError, match="older version"):
        sample_synthetic(folder, base / "prepared", base / "conditions", splits, 0, 2, old, sampling, tmp_path / "r2")
    assert not (tmp_path / "r2").exists()


def test_a_pool_needs_every_image_of_every_slice(ratios, tmp_path):
    syn, _, second = ratios
    partial = tmp_path / "ratio2"
    shutil.copytree(syn / "ratio2", partial)
    dropped = second[~((second.source_slice_id == second.source_slice_id.iloc[0]) & (second.k == 2))]
    dropped.to_csv(partial / "manifest.tsv", sep="\t", index=False)
    with pytest.raises(ValueError, match=f"{partial}: slice .* has 1 synthetic images, expected 2"):
        load_synthetic_pool(partial, 2)
    assert len(load_synthetic_pool(partial, 1)) == second.source_slice_id.nunique()


def test_unguided_sampling_uses_the_conditional_branch_only(demo_config, spleen, model, tmp_path):
    """guidance_scale <= 1 turns classifier-free guidance off: one branch, the prompt's."""
    base, splits = spleen
    folder, _ = model
    sampling = {**sampling_settings(demo_config), "guidance_scale": 1.0, "negative_prompt": "other words"}
    inputs = (folder, base / "prepared", base / "conditions", splits, 0, 1, None)
    sample_synthetic(*inputs, sampling, tmp_path / "a")
    sample_synthetic(*inputs, {**sampling, "negative_prompt": "something else"}, tmp_path / "b")
    a, b = (load_synthetic_pool(tmp_path / name, 1) for name in "ab")
    assert all(np.isfinite(a[s]).all() and np.array_equal(a[s], b[s]) for s in a)


def test_control_strength_scales_the_controlnet_residuals(demo_config, spleen, model, monkeypatch):
    """Strength k gives exactly the images of a ControlNet whose residuals are k times as large."""
    from medaug.diffboost.generator import Sampler
    from medaug.diffusion.models import load_model_folder

    base, splits = spleen
    folder, _ = model
    conditions = load_slices(base / "prepared", base / "conditions", development_slices(base / "prepared", splits, 0))[
        1
    ][:4]
    sampling = sampling_settings(demo_config)

    def images(strength, factor):
        components, info = load_model_folder(folder)
        forward = components["controlnet"].forward

        def scaled(*args, **kwargs):
            down, mid = forward(*args, **kwargs)
            return [factor * d for d in down], factor * mid

        monkeypatch.setattr(components["controlnet"], "forward", scaled)
        sampler = Sampler(components, info, {**sampling, "control_strength": strength}, "cpu")
        return sampler.sample(conditions, [1, 2, 3, 4], [1, 1, 1, 1])

    stronger = images(2.0, 1.0)
    assert np.allclose(stronger, images(1.0, 2.0), atol=1e-5)
    assert not np.allclose(stronger, images(1.0, 1.0), atol=1e-3)


def test_inside_ring_contrast_and_correlation_by_hand():
    from medaug.diffboost.quality import correlation, inside_ring_contrast

    mask = np.zeros((9, 9), bool)
    mask[3:6, 3:6] = True
    image = np.where(mask, 0.5, -0.25)
    image[0, 0] = 9.0  # outside the 1-pixel ring: ignored
    assert inside_ring_contrast(image, mask, ring_px=1) == pytest.approx(0.75)
    assert np.isnan(inside_ring_contrast(image, np.zeros_like(mask)))
    assert correlation(image, 2 * image + 1) == pytest.approx(1.0)
    assert correlation(image, -image) == pytest.approx(-1.0)


def test_nearest_real_distance_spots_a_copy_and_skips_an_image_itself():
    from medaug.diffboost.quality import nearest_distance

    real = np.stack([np.full((8, 8), v, np.float32) for v in (-0.5, 0.0, 0.75)])
    copies_and_new = np.stack([real[2], np.full((8, 8), 0.1, np.float32)])
    assert nearest_distance(copies_and_new, real) == pytest.approx([0.0, 0.1])
    assert nearest_distance(real, real, exclude_same=True) == pytest.approx([0.5, 0.5, 0.75])
    large = np.zeros((2, 256, 256), np.float32)  # shrunk before comparing, same distances
    large[1] += 0.5
    assert nearest_distance(large, large, exclude_same=True) == pytest.approx([0.5, 0.5])


def test_generator_quality_measures_real_fine_tuned_and_untrained(demo_config, spleen, model, tmp_path):
    """The fine-tuned row is the pool's image 1 of each slice; the untrained row samples the
    generator as fine-tuning starts it, with the same noise; real slices correlate with
    themselves and the bright demo spleen has a positive contrast; each source trains a
    segmenter scored on the real test slices, and the segmenter trained on real slices
    provides the FID features."""
    from medaug.diffboost.params import quality_settings
    from medaug.diffboost.quality import QUALITY_SLICES, generator_quality

    base, splits = spleen
    folder, _ = model
    config = copy.deepcopy(demo_config)
    config["diffboost"]["segmentation"]["epochs"] = 3
    settings = quality_settings(config, "spleen")
    pool_dir = tmp_path / "ratio1"
    sample_synthetic(folder, base / "prepared", base / "conditions", splits, 0, 1, None, settings["sampling"], pool_dir)
    args = (base / "prepared", base / "conditions", splits, 0, pool_dir, settings)
    result = generator_quality(*args, tmp_path / "quality.json")
    train = role_slices(read_slice_table(base / "prepared"), splits, 0, "train")
    assert result["slices"] == min(QUALITY_SLICES, len(train))
    assert result["real"]["correlation"] == pytest.approx(1.0) and result["real"]["contrast"] > 0.1
    assert result["real"]["contrast_of_real"] == pytest.approx(1.0)
    assert "not comparable" in result["fid_features"]
    for source in ("real", "fine-tuned", "untrained"):
        row = result[source]
        assert np.isfinite(row["contrast"]) and -1 <= row["correlation"] <= 1
        assert row["nearest_real"] > 0 and 0 <= row["segmenter_dice"] <= 1
        assert np.isfinite([row["fid"], row["kid"], row["kid_std"]]).all() and row["fid"] >= -1e-6
    assert result["fine-tuned"] != result["untrained"]
    assert json.loads((tmp_path / "quality.json").read_text()) == result
    assert generator_quality(*args, tmp_path / "again.json") == result  # same noise, same numbers


def test_killed_finetuning_resumes_from_its_checkpoint(demo_config, spleen, tmp_path):
    base, _ = spleen
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["diffboost"]["controlnet"].update(max_steps=40, checkpointing_steps=4, batch_size=4)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    # The stage's console script, run in a working directory laid out as the pipeline's.
    dataset_dir = tmp_path / "results" / "diffboost" / "spleen"
    dataset_dir.mkdir(parents=True)
    for name in ("prepared", "conditions", "splits.json"):
        (dataset_dir / name).symlink_to(base / name)
    state, model = dataset_dir / "fold0" / "controlnet_state", dataset_dir / "fold0" / "controlnet"
    entry = Path(sys.executable).parent / "medaug-finetune-controlnet"
    command = [str(entry), "spleen", "0", "--config", str(tmp_path / "config.yaml")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 240
    while not any(state.glob("checkpoint-*")) and time.time() < deadline and first.poll() is None:
        time.sleep(0.5)
    assert any(state.glob("checkpoint-*")), "no checkpoint appeared before the deadline"
    first.send_signal(signal.SIGKILL)  # as a SLURM time limit would
    first.wait(timeout=30)
    killed_at = max(int(p.name.split("-")[1]) for p in state.glob("checkpoint-*"))
    assert killed_at < 40 and not model.exists()
    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"resuming from checkpoint-{killed_at}" in second.stderr
    info = json.loads((model / "medaug_model.json").read_text())
    assert info["training"]["resumed_from"] == killed_at
    assert info["training"]["steps_run"] == 40 - killed_at  # at most one interval was lost


def test_finetuning_resumes_only_under_the_same_settings_and_data(demo_config, spleen, model, tmp_path, caplog):
    """A changed learning rate, augmentation or training set never resumes another run's
    checkpoint (the old code resumed it, ran 0 steps and exported the old weights)."""
    base, splits = spleen
    settings = controlnet_settings(demo_config, "spleen")
    state = tmp_path / "state"
    shutil.copytree(base / "state", state)

    def finetune(out: str, changes: dict, fold_splits: dict = splits) -> dict:
        changed = {**settings, "settings": {**settings["settings"], **changes}}
        return finetune_controlnet(
            base / "prepared", base / "conditions", fold_splits, 0, out_dir=tmp_path / out, state_dir=state, **changed
        )["training"]

    assert finetune("same", {})["resumed_from"] == 4
    for key, value in (("learning_rate", 1e-4), ("rotation_degrees", 0.0)):
        caplog.clear()
        training = finetune(key, {key: value})
        assert training["resumed_from"] is None and training["steps_run"] == 4
        assert "not resuming" in caplog.text and f"model.{key}" in caplog.text
    # Another development set (here: one case fewer) is another run as well.
    fewer = json.loads(json.dumps(splits))
    fewer["folds"][0]["train"] = fewer["folds"][0]["train"][1:]
    caplog.clear()
    assert finetune("fewer", {"rotation_degrees": 0.0}, fewer)["resumed_from"] is None
    assert "changed: data" in caplog.text


def test_pretrained_stable_diffusion_layout_trains_in_latent_space(demo_config, spleen, tmp_path):
    """The real-weights path: a (tiny) Stable Diffusion folder in diffusers layout with a
    VAE, loaded locally; only the ControlNet trains and is exported."""
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel

    from medaug.diffusion.models import build_tiny_components

    base, splits = spleen
    tiny = build_tiny_components(demo_config["diffboost"]["controlnet"]["tiny_model"], 32, ["spleen, ct"], 0)
    sd = tmp_path / "sd15"
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 32),
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae.save_pretrained(sd / "vae")
    unet.save_pretrained(sd / "unet")
    tiny["text_encoder"].save_pretrained(sd / "text_encoder")
    tiny["tokenizer"].save_pretrained(sd / "tokenizer")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(sd / "scheduler")
    # f=2 latents: the control image is embedded down to 16 x 16 by one stride-2 level.
    ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32)).save_pretrained(tmp_path / "cn")

    settings = controlnet_settings(demo_config, "spleen")
    settings["settings"] = {
        **settings["settings"],
        "pretrained_model": str(sd),
        "pretrained_controlnet": str(tmp_path / "cn"),
        "train_unet": False,
        "max_steps": 2,
    }
    info = finetune_controlnet(
        base / "prepared",
        base / "conditions",
        splits,
        0,
        out_dir=tmp_path / "model",
        state_dir=tmp_path / "state",
        **settings,
    )
    assert not info["pixel_space"] and info["base"] == str(sd)
    assert {p.name for p in (tmp_path / "model").iterdir()} == {"controlnet", "medaug_model.json"}
    assert torch.equal(  # the locked UNet did not move
        UNet2DConditionModel.from_pretrained(sd / "unet").conv_in.weight, unet.conv_in.weight
    )
    manifest = sample_synthetic(
        tmp_path / "model",
        base / "prepared",
        base / "conditions",
        splits,
        0,
        1,
        None,
        sampling_settings(demo_config),
        tmp_path / "ratio1",
    )
    pool = load_synthetic_pool(tmp_path / "ratio1", 1)
    assert len(pool) == len(manifest) and next(iter(pool.values())).shape == (1, 32, 32)


def test_finetuning_visits_every_slice_once_per_epoch():
    from medaug.diffboost.generator import epoch_order

    n, batch = 10, 4
    drawn = np.concatenate([epoch_order(n, batch, step, 0, 0) for step in range(10)])
    for epoch in range(4):
        assert sorted(drawn[epoch * n : (epoch + 1) * n]) == list(range(n))
    assert not np.array_equal(drawn[:n], drawn[n : 2 * n])  # a fresh order every epoch
    assert np.array_equal(epoch_order(n, batch, 7, 0, 0), drawn[28:32])  # a resumed run draws the same
