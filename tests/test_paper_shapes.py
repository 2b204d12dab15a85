"""Every DiffBoost code path of config.paper.yaml at paper shapes, for a step or two on CPU.

384 px slices; an SD 1.5-layout (tiny) model folder with an 8x-downsampling VAE whose UNet
``sample_size`` (64, as SD 1.5's) is not 384 / 8; the paper's sampler, segmenter settings
and architectures; every augmentation arm; both protocols; the nnU-Net arm. Only steps,
epochs and widths of the stand-in model are cut: no code path may run for the first time
on a cluster.
"""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from medaug.demo import write_demo_dataset
from medaug.diffboost.generator import finetune_controlnet, sample_synthetic, write_conditions
from medaug.diffboost.nnunet_arm import plan_real, train_ratio
from medaug.diffboost.params import (
    PREPARE_KEYS,
    controlnet_settings,
    nnunet_settings,
    quality_settings,
    sampling_settings,
    variants,
)
from medaug.diffboost.segmenter import Variant, augment, build_network, train_and_evaluate
from medaug.diffboost.slices import load_synthetic_pool
from medaug.papers import validate_config
from medaug.preparation import prepare_segmentation
from medaug.splits import make_splits

from .conftest import REPO, peak_rss

SIZE = 384


@pytest.fixture(scope="module")
def paper():
    """config.paper.yaml as `snakemake --profile slurm` reads it (over config.yaml)."""
    from snakemake.utils import update_config

    merged = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(merged, yaml.safe_load((REPO / "config.paper.yaml").read_text()))
    config = validate_config(merged)
    assert config["diffboost"]["image_size"] == SIZE
    return config


@pytest.fixture(scope="module")
def busi(paper, tmp_path_factory):
    """A six-image BUSI in its real format, prepared and split as the paper configures it."""
    base = tmp_path_factory.mktemp("paper_shapes")
    params = {**paper["demo"]["busi"], "images_per_class": {"benign": 3, "malignant": 2, "normal": 1}}
    root = write_demo_dataset(base / "Dataset_BUSI_with_GT", paper["seed"], params)
    section = paper["diffboost"]
    entry = {**paper["datasets"]["busi"], "root": str(root)}
    prepare_segmentation("busi", entry, base / "prepared", **{k: section[k] for k in PREPARE_KEYS})
    write_conditions(base / "prepared", base / "conditions", section["conditions"])
    split = {"scheme": "kfold", "n_folds": 3, "shuffle": False, "val_fraction": 0.2, "seed": 0}
    splits = make_splits("busi", base / "prepared", "segmentation", split)
    return base, splits


def stable_diffusion_folder(folder):
    """A tiny SD 1.5-layout folder: VAE with 4 levels (8x), UNet with sample_size 64."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from medaug.diffusion.models import tiny_tokenizer

    torch.manual_seed(0)
    AutoencoderKL(
        block_out_channels=(4, 4, 4, 4),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
    ).save_pretrained(folder / "vae")
    UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    ).save_pretrained(folder / "unet")
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer(["breast, ultrasound, best quality, extremely detailed, gray, sketch"], max_length=77)
    tokenizer.save_pretrained(folder / "tokenizer")
    CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    ).save_pretrained(folder / "text_encoder")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(
        folder / "scheduler"
    )
    return folder


@pytest.fixture(scope="module")
def synthetic(paper, busi, tmp_path_factory):
    """The paper's generator path: a ControlNet made from the SD UNet, fine-tuned for one
    step in latent space, then the paper's sampler (CFG 9, prompt mix) at ratio 1."""
    base, splits = busi
    work = tmp_path_factory.mktemp("generator")
    settings = controlnet_settings(paper, "busi")
    assert not settings["settings"]["train_unet"]
    settings["settings"] = {
        **settings["settings"],
        "pretrained_model": str(stable_diffusion_folder(work / "sd15")),
        "max_steps": 1,
        "batch_size": 2,
    }
    with peak_rss("finetune_controlnet, 384 px, one step of batch 2"):
        prepared, conditions = base / "prepared", base / "conditions"
        info = finetune_controlnet(
            prepared, conditions, splits, 0, out_dir=work / "model", state_dir=work / "state", **settings
        )
    assert not info["pixel_space"] and info["image_size"] == SIZE
    sampling = {**sampling_settings(paper), "ddim_steps": 2}
    assert sampling["guidance_scale"] == 9.0
    with peak_rss("sample_synthetic, 384 px, ratio 1, 2 DDIM steps"):
        manifest = sample_synthetic(
            work / "model", base / "prepared", base / "conditions", splits, 0, 1, None, sampling, work / "ratio1"
        )
    return work / "ratio1", manifest, settings, sampling


def test_sampling_at_384_px_decodes_48_px_latents_whatever_the_unets_sample_size(synthetic):
    folder, manifest, *_ = synthetic
    pool = load_synthetic_pool(folder, 1)
    images = np.stack(list(pool.values()))
    assert len(pool) == len(manifest) > 0
    assert images.shape[1:] == (1, SIZE, SIZE) and np.isfinite(images).all() and np.abs(images).max() <= 1
    assert json.loads((folder / "counts.json").read_text())["condition_method"] == "canny"
    # The pool is read through memory maps of its shards, not loaded.
    assert all(isinstance(images.mapped(0), np.memmap) for images in pool.values())


def test_a_paper_scale_pool_is_read_an_image_at_a_time(tmp_path):
    """A pool of 384 px images (8 slices x ratio 40: 180 MiB as float32) opened and touched
    one image per slice, as a segmenter batch does: the process's own (anonymous) memory
    grows by those images, not by the pool. Mapped file pages are left out of the count:
    they are the page cache's, shared and reclaimable. The bound, a quarter of the pool, is
    far above the images touched (4.5 MiB) and far below a loaded pool."""
    import psutil

    from medaug.diffboost.slices import MANIFEST, shard_path

    slices, ratio = 8, 40
    (tmp_path / "samples").mkdir()
    rng = np.random.default_rng(0)
    for k in range(1, ratio + 1):
        np.save(shard_path(tmp_path, k), rng.uniform(-1, 1, (slices, SIZE, SIZE)).astype(np.float16))
    rows = [
        {"synthetic_id": f"s{i}_syn{k:03d}", "source_slice_id": f"s{i}", "case_id": f"c{i}", "patient_id": f"p{i}"}
        | {"fold": 0, "k": k, "seed": k, "index": i}
        for k in range(1, ratio + 1)
        for i in range(slices)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / MANIFEST, sep="\t", index=False)
    pool_bytes = slices * ratio * SIZE * SIZE * 4

    def private_bytes() -> int:
        memory = psutil.Process().memory_info()
        return memory.rss - getattr(memory, "shared", 0)  # "shared": resident file pages (Linux)

    before = private_bytes()
    pool = load_synthetic_pool(tmp_path, ratio)
    touched = [pool[f"s{i}"][(7 * i) % ratio] for i in range(slices)]
    grown = private_bytes() - before
    assert len(pool) == slices and all(len(images) == ratio for images in pool.values())
    assert all(image.shape == (SIZE, SIZE) and image.dtype == np.float32 for image in touched)
    assert grown < pool_bytes / 4, f"memory grew by {grown / 2**20:.0f} MiB for a {pool_bytes / 2**20:.0f} MiB pool"


def test_generator_quality_samples_the_pretrained_base_at_384_px(paper, busi, synthetic, tmp_path):
    """The quality job at paper shapes: the pretrained base as the untrained generator, a
    segmenter of the paper's architecture per image source (one epoch), and FID/KID on the
    real-trained segmenter's bottleneck."""
    from medaug.diffboost.quality import generator_quality

    base, splits = busi
    folder, _, finetune, sampling = synthetic
    settings = quality_settings(paper, "busi")
    assert settings["segmenter"]["settings"]["channels"] == [16, 32, 64, 128, 128, 256]
    settings["segmenter"]["settings"]["epochs"] = 1
    settings.update(finetune=finetune, sampling=sampling)
    with peak_rss("generator_quality, 384 px, one epoch per segmenter"):
        result = generator_quality(
            base / "prepared", base / "conditions", splits, 0, folder, settings, tmp_path / "q.json"
        )
    assert result["slices"] > 0
    for source in ("real", "fine-tuned", "untrained"):
        assert np.isfinite([result[source][k] for k in ("correlation", "segmenter_dice")]).all()
        # FID/KID need two images in each half of the slices.
        assert np.isfinite([result[source][k] for k in ("fid", "kid")]).all() == (result["slices"] >= 4)


@pytest.mark.parametrize("architecture", ["AttentionUnet", "UNet", "ResUNet", "UNETR", "SwinUNETR"])
def test_every_architecture_trains_a_step_at_384_px(paper, architecture):
    seg = paper["diffboost"]["segmentation"]
    assert architecture == seg["architecture"] or architecture in seg["ablation_architectures"]
    torch.manual_seed(0)
    network = build_network(architecture, SIZE, seg["channels"], seg["strides"])
    out = network(torch.randn(1, 1, SIZE, SIZE))
    assert out.shape == (1, 2, SIZE, SIZE)
    out.mean().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in network.parameters())


def test_every_augmentation_arm_keeps_paper_shapes(paper):
    augmentations = {v["augmentation"] for v in variants(paper, "prostate").values()}
    assert len(augmentations) == 11  # none, DiffBoost and the nine ablation arms
    g = torch.Generator().manual_seed(0)
    real, synthetic = torch.rand(2, 1, SIZE, SIZE) * 2 - 1, torch.rand(2, 1, SIZE, SIZE) * 2 - 1
    label = (torch.rand(2, 1, SIZE, SIZE) > 0.5).float()
    for name in sorted(augmentations):
        x, x_syn, y = augment(name, real, synthetic, label, g)
        assert x.shape == x_syn.shape == y.shape == real.shape, name
        assert torch.isfinite(x).all() and set(y.unique().tolist()) <= {0.0, 1.0}, name


def test_monai_arm_with_synthetic_pairs_runs_both_protocols_at_384_px(paper, busi, synthetic):
    base, splits = busi
    folder, *_ = synthetic
    settings = {**paper["diffboost"]["segmentation"], "epochs": 1}
    assert settings["protocols"] == ["official", "clean"]
    fields = {k: v for k, v in variants(paper, "busi")["diffboost_r50"].items() if k != "tables"}
    variant = Variant(**{**fields, "ratio": 1})
    with peak_rss("train_segmenter (DiffBoost arm), 384 px, one epoch per protocol"):
        metrics, record = train_and_evaluate(base / "prepared", splits, 0, variant, settings, SIZE, 3, folder)
    assert set(metrics.protocol) == {"official", "clean"}
    assert metrics[["dice", "precision", "recall", "hd95"]].notna().all().all()
    assert all(record["protocols"][p]["train_slices"] > 0 for p in ("official", "clean"))


def test_nnunet_arm_plans_trains_and_predicts_at_384_px(paper, busi, synthetic, tmp_path):
    base, splits = busi
    folder, *_ = synthetic
    settings = nnunet_settings(paper)
    # nnU-Net's stock trainer runs 1000 epochs; the short trainer runs the same code for one.
    short = {**settings["trainer_settings"], "epochs": 1, "iters": 1, "val_iters": 1, "skip_final_val": True}
    plans = plan_real(base / "prepared", splits, 0, "official", tmp_path, tmp_path / "plans.json")
    assert plans["configurations"]["2d"]["median_image_size_in_voxels"][-2:] == [SIZE, SIZE]
    with peak_rss("nnunet_train, 384 px, ratio 1, one iteration"):
        metrics = train_ratio(
            base / "prepared", splits, 0, "official", 1, folder, tmp_path, "nnUNetTrainer_medaug", short, threads=2
        )
    assert len(metrics) > 0 and metrics.train_synthetic.iloc[0] == metrics.train_real.iloc[0] > 0
    assert metrics[["dice", "precision", "recall", "hd95"]].notna().all().all()
