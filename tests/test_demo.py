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
