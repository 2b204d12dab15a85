"""The real BUSI dataset (Al-Dhabyani et al. 2020), where the machine has it: set
``MEDAUG_BUSI_ROOT`` to its ``Dataset_BUSI_with_GT`` folder (``.ci/run`` does when
``../shared/data/busi`` exists). Every real file is read by the adapters, preparation keeps
every lesion pixel, and a short baseline on a real subset learns above a floor measured
over five seeds (``tools/real_busi_floor.py``). Without the variable the tests are skipped."""

import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medaug.datasets import classification_dataset, segmentation_dataset

BUSI_ROOT = os.environ.get("MEDAUG_BUSI_ROOT")
pytestmark = pytest.mark.skipif(
    not (BUSI_ROOT and Path(BUSI_ROOT).is_dir()),
    reason="MEDAUG_BUSI_ROOT does not name the real BUSI folder (Dataset_BUSI_with_GT)",
)
CLASSES = {"benign": 437, "malignant": 210, "normal": 133}


@pytest.fixture(scope="module")
def entry():
    return {"format": "busi", "root": BUSI_ROOT, "modality": "US"}


def test_the_adapters_read_every_real_file(entry):
    refs = segmentation_dataset(entry).cases()
    assert {c: sum(r.group == c for r in refs) for c in CLASSES} == CLASSES
    mask_files = sorted(Path(BUSI_ROOT).glob("*/*_mask*.png"))
    assert sum(len([k for k in r.files if k.startswith("mask")]) for r in refs) == len(mask_files) == 798
    dataset = classification_dataset(entry)
    assert len(dataset.cases()) == 780
    grey = [dataset.load_image(ref) for ref in dataset.cases()]
    assert all(g.min() >= 0 and g.max() <= 255 and g.max() > 50 for g in grey)


def test_preparation_keeps_every_lesion_pixel(entry, tmp_path):
    from medaug.preparation import prepare_segmentation

    prepare_segmentation("busi", entry, tmp_path / "prepared", 64, (0.5, 99.5), None, None)
    for ref in segmentation_dataset(entry).cases():
        union = None
        for key, path in ref.files.items():
            if key.startswith("mask"):
                mask = np.asarray(Image.open(path).convert("L")) > 0
                union = mask if union is None else union | mask
        native = np.load(tmp_path / "prepared" / "arrays" / f"{ref.case_id}.npz")["mask_native"]
        assert int(native.sum()) == int(union.sum()), ref.case_id
        assert (native.sum() == 0) == (ref.group == "normal"), ref.case_id


def test_a_short_baseline_on_a_real_subset_learns(tmp_path):
    # The floor sits below the minimum over five seeds and two float paths
    # (docs/real-busi-floor.md) and above what predicting nothing scores.
    from tools.real_busi_floor import FLOOR, train_subset

    dice, empty_prediction_dice = train_subset(Path(BUSI_ROOT), tmp_path, seed=0)
    assert dice > FLOOR > empty_prediction_dice + 0.1, f"clean-protocol test Dice {dice:.3f}"


def test_the_floor_is_the_one_measured():
    from tools.real_busi_floor import FLOOR

    record = (Path(__file__).parent.parent / "docs" / "real-busi-floor.md").read_text()
    assert re.search(rf"floor asserted by the test: {FLOOR}\b", record)
    minimum = min(float(value) for value in re.findall(r"\| \d \| (0\.\d+) \|", record))
    assert minimum - 0.05 > FLOOR


def test_the_real_tier_plans_every_diffboost_and_dcube_stage_on_the_real_root(tmp_path):
    # What `make real BUSI=...` runs (config.real.yaml), as a dry run: its results are in
    # docs/real-data.md; the hour it takes is measured there, not here.
    from .conftest import REPO, snakemake

    config = [str(REPO / "config.yaml"), str(REPO / "config.real.yaml")]
    root = f"datasets={{busi: {{format: busi, root: '{BUSI_ROOT}', modality: US}}}}"
    result = snakemake(["-n", "--directory", str(tmp_path), "--configfile", *config, "--config", root], tmp_path)
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.MULTILINE))
    expected = {"finetune_controlnet": "1", "sample_synthetic": "1", "generator_quality": "1"}
    expected |= {"train_segmenter": "4", "nnunet_train": "2", "diffboost_report": "1"}
    expected |= {"dcube_train_generator": "1", "dcube_select_blocks": "1", "dcube_sample": "1"}
    expected |= {"dcube_classify": "8", "dcube_synthetic_quality": "1", "dcube_report": "1"}
    assert {rule: counts.get(rule) for rule in expected} == expected
    assert "hovernet" not in result.stdout
