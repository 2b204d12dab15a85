import json

import nibabel as nib
import numpy as np
import pytest
import scipy.io
from PIL import Image

from medaug.demo import DEMO_DATASETS, write_demo_dataset


def _content(root):
    """Decoded content of every file (byte-level .mat headers carry a timestamp)."""
    content = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        key = str(path.relative_to(root))
        if path.suffix in (".png", ".tif"):
            content[key] = np.asarray(Image.open(path))
        elif path.name.endswith(".nii.gz"):
            image = nib.load(path)
            content[key] = (np.asarray(image.dataobj), image.affine)
        elif path.suffix == ".mat":
            content[key] = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
        else:
            content[key] = path.read_text()
    return content


def _equal(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


@pytest.mark.parametrize("folder", list(DEMO_DATASETS))
def test_demo_is_deterministic_from_the_seed(config, demo_root, tmp_path, folder):
    key, _ = DEMO_DATASETS[folder]
    write_demo_dataset(tmp_path / folder, config["seed"], config["demo"][key])
    assert _equal(_content(demo_root / folder), _content(tmp_path / folder))


def test_other_seed_gives_other_data(config, demo_root, tmp_path):
    write_demo_dataset(tmp_path / "Task09_Spleen", config["seed"] + 1, config["demo"]["spleen"])
    assert not _equal(_content(demo_root / "Task09_Spleen"), _content(tmp_path / "Task09_Spleen"))


def test_demo_uses_the_real_on_disk_formats(demo_root):
    busi = demo_root / "Dataset_BUSI_with_GT"
    assert sorted(p.name for p in busi.iterdir()) == ["benign", "malignant", "normal"]
    assert (busi / "benign" / "benign (1).png").is_file() and (busi / "benign" / "benign (1)_mask.png").is_file()
    assert np.asarray(Image.open(busi / "benign" / "benign (1).png")).ndim == 3  # RGB as distributed
    spleen = json.loads((demo_root / "Task09_Spleen" / "dataset.json").read_text())
    assert spleen["modality"] == {"0": "CT"} and spleen["labels"] == {"0": "background", "1": "spleen"}
    assert spleen["numTraining"] == len(spleen["training"])
    ct = nib.load(demo_root / "Task09_Spleen" / spleen["training"][0]["image"].removeprefix("./"))
    assert ct.get_data_dtype() == np.int16 and np.asarray(ct.dataobj).min() <= -1000
    prostate = json.loads((demo_root / "Task05_Prostate" / "dataset.json").read_text())
    assert prostate["modality"] == {"0": "T2", "1": "ADC"}
    assert nib.load(demo_root / "Task05_Prostate" / prostate["training"][0]["image"]).ndim == 4
    mat = scipy.io.loadmat(demo_root / "CoNSeP" / "Train" / "Labels" / "train_1.mat")
    assert {"inst_map", "type_map", "inst_type", "inst_centroid"} <= mat.keys()
    assert mat["inst_type"].shape[1] == 1 and mat["inst_centroid"].shape[1] == 2
    assert (demo_root / "GLySAC" / "Test" / "Images" / "test_1.tif").is_file()
    tree = demo_root / "DCube_pancreas"
    assert sorted(p.name for p in (tree / "Train").iterdir()) == ["BENIGN", "MALIGNANT", "NORMAL"]


def test_a_failing_generator_leaves_no_folder(tmp_path, config):
    broken = dict(config["demo"]["spleen"], shape=[80, 80])  # invalid: needs 3 dimensions
    with pytest.raises(ValueError):
        write_demo_dataset(tmp_path / "Task09_Spleen", 0, broken)
    assert list(tmp_path.iterdir()) == []


def _mean_mask_dice(prepared, splits, fold) -> float:
    """Dice on the test slices of the best fixed mask: the training masks' per-pixel mean,
    thresholded where it scores best on the training slices themselves."""
    import pandas as pd

    from medaug.splits import role_cases

    slices = pd.read_csv(prepared / "slices.tsv", sep="\t")

    def masks(role):
        chosen = []
        for case in sorted(role_cases(splits, fold, role)):
            rows = slices[(slices.case_id == case) & slices.positive]
            chosen.append(np.load(prepared / "arrays" / f"{case}.npz")["mask"][rows.slice_index.to_numpy()] > 0)
        return np.concatenate(chosen)

    def dice(fixed, stack):
        # 0 rather than NaN when both masks are empty.
        return float(np.mean([2 * (fixed & m).sum() / max(fixed.sum() + m.sum(), 1) for m in stack]))

    train, test = masks("development"), masks("test")
    mean = train.mean(axis=0)
    best = max(np.linspace(0.05, 0.95, 19), key=lambda threshold: dice(mean >= threshold, train))
    return dice(mean >= best, test)


@pytest.mark.parametrize("dataset", ["busi", "spleen", "prostate"])
def test_demo_segmentation_data_tests_learning(dataset, tmp_path):
    """Where the organ or lesion usually is predicts little on the demo data (so a Dice
    above that shows learning), and with the demo's split settings every BUSI fold tests
    every lesion class."""
    import yaml

    from medaug.diffboost.params import split_settings
    from medaug.papers import validate_config
    from medaug.preparation import prepare_segmentation
    from medaug.splits import make_splits

    from .conftest import REPO

    config = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    entry = config["datasets"][dataset]
    folder = entry["root"].rsplit("/", 1)[-1]
    write_demo_dataset(tmp_path / folder, config["seed"], config["demo"][DEMO_DATASETS[folder][0]])
    section = config["diffboost"]
    prepared = tmp_path / "prepared"
    prepare_segmentation(
        dataset,
        {**entry, "root": str(tmp_path / folder)},
        prepared,
        section["image_size"],
        tuple(section["clip_percentiles"]),
        section["ct_intensity_floor"],
        section["positive_slice_min_pixels"],
    )
    splits = make_splits(dataset, prepared, "segmentation", split_settings(config, dataset))
    for fold in range(section["folds"]):
        assert _mean_mask_dice(prepared, splits, fold) < 0.3, fold
        if dataset == "busi":
            classes = {case.split("_")[0] for case in splits["folds"][fold]["test"]}
            assert classes == {"benign", "malignant", "normal"}, fold
