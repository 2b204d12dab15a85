"""Adapters read the demo data (real on-disk formats) and reject each kind of bad input
with one line naming the file and the problem, leaving no output behind."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import scipy.io
from PIL import Image

from medaug.datasets import classification_dataset, nuclei_dataset, segmentation_dataset
from medaug.errors import DatasetError
from medaug.preparation import prepare_classification, prepare_nuclei, prepare_segmentation

from .conftest import entry_for

DEMO_FOLDER = {
    "busi": "Dataset_BUSI_with_GT",
    "spleen": "Task09_Spleen",
    "prostate": "Task05_Prostate",
    "consep": "CoNSeP",
    "glysac": "GLySAC",
    "pancreas": "DCube_pancreas",
}


def _prepare(dataset, entry, out_dir):
    if dataset in ("busi", "spleen", "prostate"):
        return prepare_segmentation(dataset, entry, out_dir, 32, (0.5, 99.5), -256, 20)
    if dataset in ("consep", "glysac"):
        return prepare_nuclei(dataset, entry, out_dir, 64, 48)
    return prepare_classification(dataset, entry, out_dir, 32)


# --- reading the demo data ------------------------------------------------------------


def test_busi_reads_classes_and_or_merges_extra_masks(config, demo_root):
    dataset = segmentation_dataset(entry_for(config, "busi", demo_root / DEMO_FOLDER["busi"]))
    refs = dataset.cases()
    assert {r.group for r in refs} == {"benign", "malignant", "normal"}
    assert len(refs) == sum(config["demo"]["busi"]["images_per_class"].values())
    multi = [r for r in refs if "mask_1" in r.files]
    assert multi, "the demo must exercise multi-lesion cases"
    case = dataset.load(multi[0])
    union = np.zeros(case.mask.shape[1:], dtype=bool)
    for key, path in multi[0].files.items():
        if key.startswith("mask"):
            union |= np.asarray(Image.open(path)) > 0
    np.testing.assert_array_equal(case.mask[0], union)
    assert set(np.unique(case.mask)) == {0, 1}
    normal = next(r for r in refs if r.group == "normal")
    assert dataset.load(normal).mask.sum() == 0


def test_msd_reorients_to_ras_and_keeps_every_slice(config, demo_root):
    dataset = segmentation_dataset(entry_for(config, "spleen", demo_root / DEMO_FOLDER["spleen"]))
    ref = dataset.cases()[0]
    raw = nib.load(ref.files["label"])
    assert nib.aff2axcodes(raw.affine) != ("R", "A", "S"), "demo volumes are stored non-canonically"
    case = dataset.load(ref)
    nx, ny, nz = raw.shape
    assert case.image.shape == case.mask.shape == (nz, ny, nx)
    assert case.mask.sum() == np.asarray(raw.dataobj).sum()
    assert case.spacing == (5.0, 3.0, 3.0)


def test_prostate_keeps_t2_and_merges_pz_tz(config, demo_root):
    dataset = segmentation_dataset(entry_for(config, "prostate", demo_root / DEMO_FOLDER["prostate"]))
    ref = dataset.cases()[0]
    case = dataset.load(ref)
    raw = np.asarray(nib.load(ref.files["image"]).dataobj)
    assert raw.ndim == 4 and case.image.ndim == 3
    # T2 channel: the image equals channel 0 of the raw 4D volume, reoriented.
    assert np.isclose(case.image.sum(), raw[..., 0].sum(), rtol=1e-5)
    assert set(np.unique(case.mask)) == {0, 1}
    raw_label = np.asarray(nib.load(ref.files["label"]).dataobj)
    assert case.mask.sum() == (raw_label > 0).sum()
    assert dataset.labels == {0: "background", 1: "PZ+TZ"}


@pytest.mark.parametrize("dataset_name", ["consep", "glysac"])
def test_nuclei_merge_types_as_diffmix(config, demo_root, dataset_name):
    dataset = nuclei_dataset(entry_for(config, dataset_name, demo_root / DEMO_FOLDER[dataset_name]))
    refs = dataset.cases()
    assert {r.group for r in refs} == {"Train", "Test"}
    tile = dataset.load(refs[0])
    n_classes = {"consep": 4, "glysac": 3}[dataset_name]
    assert set(np.unique(tile.inst_type)) <= set(range(1, n_classes + 1))
    assert 1 in tile.inst_type, "every demo tile carries the rare class"
    for inst_id, inst_type in enumerate(tile.inst_type, start=1):
        assert set(np.unique(tile.type_map[tile.inst_map == inst_id])) == {inst_type}


def test_class_tree_orders_classes_naturally(config, demo_root):
    dataset = classification_dataset(entry_for(config, "pancreas", demo_root / DEMO_FOLDER["pancreas"]))
    refs = dataset.cases()
    assert dataset.class_names() == ["BENIGN", "MALIGNANT", "NORMAL"]
    expected = sum(config["demo"]["pancreas"]["train_per_class"].values()) + sum(
        config["demo"]["pancreas"]["test_per_class"].values()
    )
    assert len(refs) == expected
    assert dataset.load_image(refs[0]).ndim == 2


# --- bad input --------------------------------------------------------------------------


def _truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])


def _busi_first(root, suffix=""):
    return root / "benign" / f"benign (1){suffix}.png"


def busi_corrupt_image(root):
    _truncate(_busi_first(root))
    return _busi_first(root), "unreadable or corrupt image"


def busi_shape_mismatch(root):
    mask = _busi_first(root, "_mask")
    Image.fromarray(np.zeros((10, 12), dtype=np.uint8)).save(mask)
    return mask, "shape mismatch"


def busi_label_values(root):
    mask = _busi_first(root, "_mask")
    values = np.asarray(Image.open(mask)).copy()
    values[0, 0] = 128
    Image.fromarray(values).save(mask)
    return mask, "mask values [128] outside the declared set [0, 255]"


def busi_missing_mask(root):
    _busi_first(root, "_mask").unlink()
    return _busi_first(root), "missing mask"


def busi_empty_class(root):
    for path in (root / "normal").iterdir():
        path.unlink()
    return root / "normal", "class folder contains no images"


def busi_duplicate_id(root):
    shutil.copy(_busi_first(root), root / "benign" / "benign(1).png")
    shutil.copy(_busi_first(root, "_mask"), root / "benign" / "benign(1)_mask.png")
    return root / "benign", "duplicate case id 'benign_1'"


def _first_training(root):
    entry = json.loads((root / "dataset.json").read_text())["training"][0]
    return root / entry["image"], root / entry["label"]


def _edit_nifti(path, edit):
    image = nib.load(path)
    nib.save(nib.Nifti1Image(edit(np.asarray(image.dataobj).copy()), image.affine), path)


def _edit_mat(path, edit):
    mat = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    edit(mat)
    scipy.io.savemat(path, mat)


def msd_4d_image(root):
    image_path, _ = _first_training(root)
    _edit_nifti(image_path, lambda data: np.stack([data, data], axis=-1))
    return image_path, "4D image where 3D is expected"


def msd_corrupt_image(root):
    image_path, _ = _first_training(root)
    _truncate(image_path)
    return image_path, "unreadable or corrupt NIfTI"


def msd_shape_mismatch(root):
    _, label_path = _first_training(root)
    _edit_nifti(label_path, lambda data: data[:-2])
    return label_path, "shape mismatch"


def msd_label_values(root):
    _, label_path = _first_training(root)

    def add_label_3(data):
        data[0, 0, 0] = 3
        return data

    _edit_nifti(label_path, add_label_3)
    return label_path, "label values [3] outside the declared set [0, 1]"


def msd_missing_label(root):
    _, label_path = _first_training(root)
    label_path.unlink()
    return label_path, "missing label"


def msd_duplicate_id(root):
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"].append(dict(meta["training"][0]))
    (root / "dataset.json").write_text(json.dumps(meta))
    return root / "imagesTr", "duplicate case id"


def _tile(root, split="Train", stem="train_1"):
    extension = ".png" if root.name == "CoNSeP" else ".tif"
    return root / split / "Images" / f"{stem}{extension}", root / split / "Labels" / f"{stem}.mat"


def nuclei_missing_label(root):
    image, label = _tile(root)
    label.unlink()
    return image, "missing label"


def nuclei_corrupt_label(root):
    _, label = _tile(root)
    label.write_bytes(b"not a mat file at all" * 10)
    return label, "unreadable or corrupt .mat"


def nuclei_shape_mismatch(root):
    _, label = _tile(root)
    _edit_mat(label, lambda mat: mat.update(inst_map=mat["inst_map"][:-1]))
    return label, "shape mismatch"


def nuclei_type_values(root):
    _, label = _tile(root)
    _edit_mat(label, lambda mat: mat["inst_type"].__setitem__((0, 0), 42))
    return label, "inst_type values [42] outside the declared set"


def nuclei_missing_key(root):
    _, label = _tile(root)
    _edit_mat(label, lambda mat: mat.pop("type_map"))
    return label, "missing key 'type_map'"


def nuclei_same_tile_in_train_and_test(root):
    image, label = _tile(root)
    test_image, test_label = _tile(root, "Test", "train_1")
    shutil.copy(image, test_image)
    shutil.copy(label, test_label)
    return test_image, "duplicate case id 'train_1'"


def nuclei_corrupt_image(root):
    image, _ = _tile(root)
    _truncate(image)
    return image, "unreadable or corrupt image"


def tree_empty_class(root):
    folder = root / "Test" / "MALIGNANT"
    for path in folder.iterdir():
        path.unlink()
    return folder, "class folder contains no images"


def tree_corrupt_image(root):
    path = sorted((root / "Train" / "BENIGN").iterdir())[0]
    _truncate(path)
    return path, "unreadable or corrupt image"


def tree_duplicate_id(root):
    path = sorted((root / "Train" / "NORMAL").iterdir())[0]
    shutil.copy(path, path.with_suffix(".PNG"))
    return path.parent, "duplicate case id"


def _float_tiff(path, values):
    """Float pixels saved as TIFF under ``path`` whatever its suffix (PIL reads by content)."""
    Image.fromarray(values.astype(np.float32)).save(path, format="TIFF")


def busi_nan_image(root):
    image = _busi_first(root)
    grey = np.asarray(Image.open(image).convert("L"), dtype=np.float32)
    grey[0, :3] = np.nan  # a float image behind a .png name: PNG itself cannot hold NaN
    _float_tiff(image, grey)
    return image, "3 non-finite (NaN or inf) pixels"


def msd_nan_voxels(root):
    image_path, _ = _first_training(root)

    def add_nan_and_inf(data):
        data = data.astype(np.float32)
        data[0, 0, 0], data[1, 1, 1] = np.nan, np.inf
        return data

    _edit_nifti(image_path, add_nan_and_inf)
    return image_path, "2 non-finite (NaN or inf) voxels"


def _edit_affine(path, edit):
    """Change the header only: the voxels stay where they were."""
    image = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), edit(image.affine.copy())), path)


def msd_mirrored_label(root):
    _, label_path = _first_training(root)
    _edit_affine(label_path, lambda affine: affine * [[-1, 1, 1, 1]] * 1.0)  # x flipped: LPS -> RPS
    return label_path, "label orientation RPS differs from the image's LPS"


def msd_transposed_label(root):
    _, label_path = _first_training(root)  # the demo is square in-plane, so shapes still agree
    _edit_affine(label_path, lambda affine: affine[:, [1, 0, 2, 3]])
    return label_path, "label orientation PLS differs from the image's LPS"


def msd_label_spacing(root):
    _, label_path = _first_training(root)
    _edit_affine(label_path, lambda affine: affine * [[1, 1, 2, 1]] * 1.0)
    return label_path, "label voxel size (2, 2, 7.2) mm differs from the image's (2, 2, 3.6) mm"


def msd_label_origin(root):
    _, label_path = _first_training(root)

    def shift_one_voxel(affine):
        affine[0, 3] += 3.0
        return affine

    _edit_affine(label_path, shift_one_voxel)
    return label_path, "mm from the image's"


def _point_first_training_at(root, key, value):
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"][0][key] = value
    (root / "dataset.json").write_text(json.dumps(meta))


def msd_image_outside_root(root):
    image_path, _ = _first_training(root)
    shutil.copy(image_path, root.parent / "elsewhere.nii.gz")  # it exists: today it is read as is
    _point_first_training_at(root, "image", "../elsewhere.nii.gz")
    return root / "dataset.json", "training entry 0: image '../elsewhere.nii.gz' points outside the dataset folder"


def msd_absolute_label(root):
    _, label_path = _first_training(root)
    outside = root.parent / "label_elsewhere.nii.gz"
    shutil.copy(label_path, outside)
    _point_first_training_at(root, "label", str(outside))
    return root / "dataset.json", f"training entry 0: label '{outside}' points outside the dataset folder"


def nuclei_zero_type_map(root):
    _, label = _tile(root)
    _edit_mat(label, lambda mat: mat.update(type_map=np.zeros_like(mat["type_map"])))
    return label, "type_map is all zero although inst_type gives types to"


def nuclei_transposed_inst_map(root):
    _, label = _tile(root)  # square tiles: the shape check cannot see it
    _edit_mat(label, lambda mat: mat.update(inst_map=mat["inst_map"].T))
    return label, "inst_map transposed, or centroids stored as (y, x)?"


def nuclei_type_disagrees(root):
    _, label = _tile(root)
    inst_type = scipy.io.loadmat(label)["inst_type"]
    other = 2 if inst_type[1, 0] != 2 else 3
    _edit_mat(label, lambda mat: mat["inst_type"].__setitem__((1, 0), other))
    return label, f"instance 2: inst_type is {other} but most of its pixels in type_map are {inst_type[1, 0]}"


def nuclei_nan_centroid(root):
    _, label = _tile(root)
    _edit_mat(label, lambda mat: mat["inst_centroid"].__setitem__((0, 0), np.nan))
    return label, "1 non-finite (NaN or inf) inst_centroid values"


def tree_test_only_class(root):
    extra = root / "Test" / "CYST"
    extra.mkdir()
    shutil.copy(sorted((root / "Test" / "BENIGN").iterdir())[0], extra / "cyst_0001.png")
    return extra, "class folder in Test but not in Train"


def tree_nan_image(root):
    path = root / "Train" / "BENIGN" / "benign_9999.tif"
    values = np.full((72, 72), 100.0)
    values[0, 0], values[5, 5] = np.nan, -np.inf
    _float_tiff(path, values)
    return path, "2 non-finite (NaN or inf) pixels"


def nuclei_labels_transposed_against_image(root):
    _, label = _tile(root)

    def transpose_all(mat):  # as a v7.3 file read with h5py and re-saved comes out
        mat.update(inst_map=mat["inst_map"].T, type_map=mat["type_map"].T)
        mat.update(inst_centroid=mat["inst_centroid"][:, ::-1].copy())

    _edit_mat(label, transpose_all)
    return label, "label maps look transposed against the image"


def busi_float_image_out_of_range(root):
    image = _busi_first(root)
    _float_tiff(image, np.asarray(Image.open(image).convert("L"), dtype=np.float32) * 1000)
    return image, "float pixels from 0 to"


def tree_negative_image(root):
    path = root / "Train" / "BENIGN" / "benign_9998.tif"
    Image.fromarray(np.full((72, 72), -5, dtype=np.int32)).save(path, format="TIFF")
    return path, "negative pixel values (minimum -5)"


BAD_INPUTS = [
    ("busi", busi_corrupt_image),
    ("busi", busi_shape_mismatch),
    ("busi", busi_label_values),
    ("busi", busi_missing_mask),
    ("busi", busi_empty_class),
    ("busi", busi_duplicate_id),
    ("busi", busi_nan_image),
    ("spleen", msd_4d_image),
    ("spleen", msd_corrupt_image),
    ("spleen", msd_shape_mismatch),
    ("spleen", msd_label_values),
    ("spleen", msd_missing_label),
    ("prostate", msd_duplicate_id),
    ("spleen", msd_nan_voxels),
    ("spleen", msd_mirrored_label),
    ("spleen", msd_transposed_label),
    ("prostate", msd_label_spacing),
    ("spleen", msd_label_origin),
    ("spleen", msd_image_outside_root),
    ("prostate", msd_absolute_label),
    ("consep", nuclei_missing_label),
    ("consep", nuclei_corrupt_label),
    ("consep", nuclei_shape_mismatch),
    ("consep", nuclei_type_values),
    ("consep", nuclei_missing_key),
    ("glysac", nuclei_same_tile_in_train_and_test),
    ("glysac", nuclei_corrupt_image),
    ("consep", nuclei_zero_type_map),
    ("glysac", nuclei_transposed_inst_map),
    ("consep", nuclei_type_disagrees),
    ("glysac", nuclei_nan_centroid),
    ("consep", nuclei_labels_transposed_against_image),
    ("busi", busi_float_image_out_of_range),
    ("pancreas", tree_negative_image),
    ("pancreas", tree_empty_class),
    ("pancreas", tree_corrupt_image),
    ("pancreas", tree_duplicate_id),
    ("pancreas", tree_test_only_class),
    ("pancreas", tree_nan_image),
]


@pytest.mark.parametrize("dataset,damage", BAD_INPUTS, ids=[d.__name__ for _, d in BAD_INPUTS])
def test_bad_input_is_named_and_leaves_no_output(config, broken_copy, tmp_path, dataset, damage):
    root = broken_copy(DEMO_FOLDER[dataset])
    bad_path, problem = damage(root)
    out_dir = tmp_path / "out" / "prepared"
    with pytest.raises(DatasetError) as error:
        _prepare(dataset, entry_for(config, dataset, root), out_dir)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(str(bad_path)), message
    assert problem in message, message
    left = list((tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else []
    assert left == [], f"a partial output was left behind: {left}"


def test_bad_input_in_dcube_busi_source_is_rejected_too(config, broken_copy, tmp_path):
    root = broken_copy(DEMO_FOLDER["busi"])
    bad_path, problem = busi_corrupt_image(root)
    with pytest.raises(DatasetError, match=problem):
        prepare_classification("busi", entry_for(config, "busi", root), tmp_path / "prepared", 32)
    assert not (tmp_path / "prepared").exists()


def test_dcube_reads_a_busi_class_tree_without_masks(config, broken_copy, tmp_path):
    # Classification never uses the masks; DiffBoost, which does, still demands them.
    root = broken_copy(DEMO_FOLDER["busi"])
    with_masks = classification_dataset(entry_for(config, "busi", root)).cases()
    for mask in root.glob("*/*_mask*.png"):
        mask.unlink()
    meta = prepare_classification("busi", entry_for(config, "busi", root), tmp_path / "prepared", 32)
    assert sum(meta["images_per_class"].values()) == len(with_masks)
    with pytest.raises(DatasetError, match="missing mask"):
        segmentation_dataset(entry_for(config, "busi", root)).cases()


# --- what the checks let through, and what they catch beyond the files ---------------------


def test_msd_accepts_float_rounding_between_label_and_image_headers(config, broken_copy):
    root = broken_copy(DEMO_FOLDER["spleen"])
    _, label_path = _first_training(root)
    _edit_affine(
        label_path, lambda affine: affine + np.array([[1e-5, 0, 0, 1e-4], [0, 1e-5, 0, 1e-4], [0] * 4, [0] * 4])
    )
    dataset = segmentation_dataset(entry_for(config, "spleen", root))
    case = dataset.load(dataset.cases()[0])
    assert case.mask.sum() == np.asarray(nib.load(label_path).dataobj).sum()


def test_nuclei_labels_tolerate_one_based_centroids_and_overdrawn_pixels(config, broken_copy):
    root = broken_copy(DEMO_FOLDER["consep"])
    _, label = _tile(root)

    def matlab_like(mat):
        mat["inst_centroid"] += 1.0  # 1-based, as MATLAB computes them
        pixels = np.argwhere(mat["inst_map"] == 1)
        other = 2 if mat["inst_type"][0, 0] != 2 else 3
        mat["type_map"][tuple(pixels[0])] = other  # one pixel overdrawn by a neighbour's type

    _edit_mat(label, matlab_like)
    dataset = nuclei_dataset(entry_for(config, "consep", root))
    assert dataset.load(next(r for r in dataset.cases() if r.case_id == "train_1")).inst_type.size


def test_nuclei_tile_with_non_finite_pixels_is_rejected(config, demo_root, monkeypatch):
    # PIL cannot decode a float RGB tile today; a reader that can must not pass NaN on.
    import medaug.datasets.nuclei as nuclei

    def float_tile(path):
        tile = np.asarray(Image.open(path), dtype=np.float32)
        tile[0, 0, 0] = np.nan
        return tile

    monkeypatch.setattr(nuclei, "read_image", float_tile)
    dataset = nuclei_dataset(entry_for(config, "consep", demo_root / DEMO_FOLDER["consep"]))
    ref = dataset.cases()[0]
    with pytest.raises(DatasetError, match=r"1 non-finite \(NaN or inf\) pixel values") as error:
        dataset.load(ref)
    assert str(error.value).startswith(str(ref.files["image"]))


def test_sixteen_bit_class_tree_keeps_its_relative_intensities(config, tmp_path):
    # A quarter-grey 16-bit image (mean 63/255 of its range) must stay quarter-grey, not be
    # clipped to near white.
    rng = np.random.default_rng(0)
    for split in ("Train", "Test"):
        for label in ("A", "B"):
            (tmp_path / "tree" / split / label).mkdir(parents=True)
            values = rng.integers(0, 2 * 63 * 257, size=(40, 40), dtype=np.uint16)
            Image.fromarray(values).save(tmp_path / "tree" / split / label / "x.png")
    entry = {"format": "class_tree", "root": str(tmp_path / "tree")}
    dataset = classification_dataset(entry)
    ref = dataset.cases()[0]
    assert np.asarray(Image.open(ref.files["image"])).dtype == np.uint16
    grey = dataset.load_image(ref)
    assert abs(grey.mean() - 63) < 2 and grey.max() <= 255
    prepare_classification("tree", entry, tmp_path / "prepared", 32)
    images = np.load(tmp_path / "prepared" / "images.npz")["image"]
    assert abs(images.mean() - 63) < 2


# --- one image-normalisation path for every reader ------------------------------------------


def _grey_levels():
    return np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))  # every 4th level, 64×64


ENCODINGS = {  # name -> (PIL image of the grey levels above, format)
    "16-bit PNG": (lambda g: Image.fromarray(g.astype(np.uint16) * 257), "PNG"),
    "12-bit range in a 16-bit PNG": (lambda g: Image.fromarray(np.round(g * (4095 / 255)).astype(np.uint16)), "PNG"),
    "8-bit values in a 16-bit PNG": (lambda g: Image.fromarray(g.astype(np.uint16)), "PNG"),
    "32-bit integer TIFF": (lambda g: Image.fromarray(g.astype(np.int32) * 257), "TIFF"),
    "float TIFF in 0..1": (lambda g: Image.fromarray(g.astype(np.float32) / 255), "TIFF"),
    "float TIFF in 0..255": (lambda g: Image.fromarray(g.astype(np.float32)), "TIFF"),
}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_reader_brings_an_image_to_the_8bit_scale(config, broken_copy, encoding):
    """The same grey levels, stored deeper or as floats, read as those levels by the
    DiffBoost reader, the D-Cube BUSI reader and the D-Cube class tree alike: never
    clipped to white, squeezed into a few levels, blackened or made constant."""
    levels = _grey_levels()
    make, file_format = ENCODINGS[encoding]
    busi = broken_copy(DEMO_FOLDER["busi"])
    tree = broken_copy(DEMO_FOLDER["pancreas"])
    busi_image = _busi_first(busi)
    make(levels).save(busi_image, format=file_format)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(_busi_first(busi, "_mask"))
    tree_image = tree / "Train" / "BENIGN" / "benign_9999.tif"
    make(levels).save(tree_image, format=file_format)

    segmentation = segmentation_dataset(entry_for(config, "busi", busi))
    busi_classes = classification_dataset(entry_for(config, "busi", busi))
    class_tree = classification_dataset(entry_for(config, "pancreas", tree))

    def ref_of(dataset, image):
        return next(r for r in dataset.cases() if r.files["image"] == image)

    read = {
        "DiffBoost BUSI": segmentation.load(ref_of(segmentation, busi_image)).image[0],
        "D-Cube BUSI": busi_classes.load_image(ref_of(busi_classes, busi_image)),
        "D-Cube class tree": class_tree.load_image(ref_of(class_tree, tree_image)),
    }
    for reader, grey in read.items():
        np.testing.assert_allclose(grey, levels, atol=0.51, err_msg=f"{encoding} read by {reader}")


def test_os_clutter_is_ignored_by_every_reader_and_manifest(config, broken_copy, tmp_path):
    from medaug.manifests import update_manifest

    clutter = {  # what macOS archives, Finder and Explorer leave beside the data
        "._{}": b"\x00\x05\x16\x07AppleDouble",
        ".DS_Store": b"\x00\x00\x00\x01Bud1",
        "Thumbs.db": b"\xd0\xcf\x11\xe0",
    }
    for dataset in ("busi", "pancreas", "consep"):
        root = broken_copy(DEMO_FOLDER[dataset])
        entry = entry_for(config, dataset, root)
        read = {"busi": segmentation_dataset, "pancreas": classification_dataset, "consep": nuclei_dataset}[dataset]
        clean_cases = [r.case_id for r in read(entry).cases()]
        update_manifest(root, tmp_path / f"{dataset}-clean.json")
        for folder in [p for p in root.rglob("*") if p.is_dir()]:
            first = sorted(f for f in folder.iterdir() if f.is_file())
            for name, data in clutter.items():
                (folder / name.format(first[0].name if first else "x.png")).write_bytes(data)
            macosx = root / "__MACOSX" / folder.relative_to(root)
            macosx.mkdir(parents=True, exist_ok=True)
            (macosx / "._x.png").write_bytes(clutter["._{}"])
        assert [r.case_id for r in read(entry).cases()] == clean_cases, dataset
        update_manifest(root, tmp_path / f"{dataset}-cluttered.json")
        listed = [
            json.loads((tmp_path / f"{dataset}-{kind}.json").read_text())["files"] for kind in ("clean", "cluttered")
        ]
        assert listed[0] == listed[1], dataset


@pytest.mark.parametrize("link", ["dangling", "loop"])
def test_a_bad_link_in_a_dataset_is_one_error_of_that_dataset(config, broken_copy, tmp_path, link):
    from medaug import paths
    from medaug.manifests import check_listing, refresh_manifests, update_manifest
    from medaug.paths import fill

    root = broken_copy(DEMO_FOLDER["busi"])
    path = root / "benign" / ("gone.png" if link == "dangling" else "again")
    path.symlink_to(tmp_path / "missing.png" if link == "dangling" else root)
    with pytest.raises(DatasetError) as error:
        update_manifest(root, tmp_path / "manifest.json")
    assert str(error.value).startswith(f"{path}: ")
    assert ("broken symbolic link" if link == "dangling" else "symbolic link loop") in str(error.value)
    assert not (tmp_path / "manifest.json").exists()

    # At parse time (every snakemake call) the manifest records it, for the preparation to
    # report; the call goes on.
    workdir = tmp_path / "run"
    manifest = workdir / fill(paths.MANIFEST, dataset="busi")
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        assert refresh_manifests({"datasets": {"busi": {"root": str(root)}}}, ["busi"]) == ["busi"]
    with pytest.raises(DatasetError) as recorded:
        check_listing(manifest)
    assert str(recorded.value) == str(error.value)
