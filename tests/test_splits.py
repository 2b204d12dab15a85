"""Splits are per patient (tile, image), deterministic, and leak-free down to the slice."""

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import KFold

from medaug.dcube.params import split_settings
from medaug.errors import DatasetError
from medaug.preparation import prepare_classification, prepare_nuclei, prepare_segmentation
from medaug.splits import LeakageError, check_no_leakage, kfold_splits, make_splits, role_cases, select

from .conftest import entry_for

SETTINGS = {"scheme": "kfold", "n_folds": 3, "shuffle": False, "val_fraction": 0.2, "seed": 0}


@pytest.fixture(scope="module")
def spleen_prepared(config, demo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("spleen") / "prepared"
    prepare_segmentation(
        "spleen", entry_for(config, "spleen", demo_root / "Task09_Spleen"), out, 32, (0.5, 99.5), -256, 20
    )
    return out


def _slices(prepared):
    return pd.read_csv(prepared / "slices.tsv", sep="\t", dtype={"case_id": str, "patient_id": str})


def test_no_test_patient_slice_reaches_training_validation_or_diffusion(spleen_prepared):
    splits = make_splits("spleen", spleen_prepared, "segmentation", SETTINGS)
    slices = _slices(spleen_prepared)
    for fold in range(3):
        test_patients = set(select(slices, splits, fold, "test").patient_id)
        assert test_patients
        # "development" is what the diffusion model and the paper-protocol segmenter train on.
        for role in ("train", "val", "development"):
            chosen = select(slices, splits, fold, role)
            assert test_patients.isdisjoint(chosen.patient_id), role
        test_slices = set(select(slices, splits, fold, "test").slice_id)
        assert test_slices == set(slices.slice_id[slices.patient_id.isin(test_patients)])
    # Every patient is tested exactly once across the folds.
    tested = [p for fold in range(3) for p in set(select(slices, splits, fold, "test").patient_id)]
    assert sorted(tested) == sorted(slices.patient_id.unique())


def test_splitting_per_slice_is_caught(spleen_prepared):
    slices = _slices(spleen_prepared)
    per_slice = slices.assign(case_id=slices.slice_id)  # every slice its own "case"
    splits = kfold_splits(per_slice, 3, 0.2, seed=0, group_column="slice_id", shuffle=True)
    with pytest.raises(LeakageError, match="in both test and"):
        check_no_leakage(splits, per_slice, group_column="patient_id")


def test_folds_match_unshuffled_kfold_of_the_official_code(spleen_prepared):
    cases = pd.read_csv(spleen_prepared / "cases.tsv", sep="\t", dtype=str)
    splits = kfold_splits(cases, 3, 0.2, seed=0)
    for fold, (_, test_index) in enumerate(KFold(n_splits=3).split(cases)):
        assert splits["folds"][fold]["test"] == cases.case_id.iloc[test_index].tolist()
    for record in splits["folds"]:
        assert record["val"] and set(record["val"]).isdisjoint(record["train"])


def test_splits_are_deterministic_and_seeded(spleen_prepared):
    cases = pd.read_csv(spleen_prepared / "cases.tsv", sep="\t", dtype=str)
    first = kfold_splits(cases, 3, 0.4, seed=1, shuffle=True)
    assert first == kfold_splits(cases, 3, 0.4, seed=1, shuffle=True)
    assert any(first != kfold_splits(cases, 3, 0.4, seed=s, shuffle=True) for s in range(2, 6))


def test_dropped_or_doubled_cases_are_caught(spleen_prepared):
    cases = pd.read_csv(spleen_prepared / "cases.tsv", sep="\t", dtype=str)
    splits = kfold_splits(cases, 3, 0.2, seed=0)
    dropped = {**splits, "folds": [dict(splits["folds"][0], train=splits["folds"][0]["train"][1:])]}
    with pytest.raises(LeakageError, match="in no role"):
        check_no_leakage(dropped, cases)
    doubled = {
        **splits,
        "folds": [dict(splits["folds"][0], val=splits["folds"][0]["val"] + splits["folds"][0]["test"][:1])],
    }
    with pytest.raises(LeakageError, match="more than one role"):
        check_no_leakage(doubled, cases)


def test_nuclei_patches_follow_their_tile(config, demo_root, tmp_path):
    prepared = tmp_path / "prepared"
    prepare_nuclei("consep", entry_for(config, "consep", demo_root / "CoNSeP"), prepared, 64, 48)
    splits = make_splits("consep", prepared, "nuclei", {"scheme": "official", "val_fraction": 0.25, "seed": 0})
    patches = pd.read_csv(prepared / "patches.tsv", sep="\t")
    tiles = pd.read_csv(prepared / "tiles.tsv", sep="\t")
    assert role_cases(splits, 0, "test") == set(tiles.case_id[tiles.split == "Test"])
    assert set(select(patches, splits, 0, "test").split) == {"Test"}
    assert set(select(patches, splits, 0, "development").split) == {"Train"}
    assert len(splits["folds"][0]["val"]) == 1


def test_stratified_holdout_keeps_every_class_in_test():
    table = pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(30)],
            "patient_id": [f"c{i}" for i in range(30)],
            "label": ["a"] * 20 + ["b"] * 7 + ["c"] * 3,
        }
    )
    from medaug.splits import holdout_splits

    splits = holdout_splits(table, 0.2, 0.2, seed=0, stratify_column="label")
    test = table[table.case_id.isin(splits["folds"][0]["test"])]
    assert set(test.label) == {"a", "b", "c"}
    assert np.isclose(len(test), 4 + 1 + 1)
    check_no_leakage(splits, table)


def _images_table(folder, labels, splits=None):
    """A prepared classification table (images.tsv) with one image per row."""
    folder.mkdir()
    table = pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(len(labels))],
            "patient_id": [f"c{i}" for i in range(len(labels))],
            "label": labels,
            "source_split": splits if splits is not None else [""] * len(labels),
        }
    )
    table.to_csv(folder / "images.tsv", sep="\t", index=False)
    return folder


def test_class_too_small_for_the_test_holdout_is_an_error(tmp_path):
    prepared = _images_table(tmp_path / "prepared", ["a"] * 20 + ["b"] * 7 + ["c"])
    settings = {"scheme": "holdout", "test_fraction": 0.2, "val_fraction": 0.2, "seed": 0}
    with pytest.raises(DatasetError, match="dataset 'toy': class 'c' has no case in the test role of fold 0") as error:
        make_splits("toy", prepared, "classification", settings)
    assert str(error.value).startswith(str(prepared / "images.tsv"))
    assert "1 case(s) in all" in str(error.value)


def test_class_with_one_official_train_image_is_missing_from_val(tmp_path):
    labels = ["a"] * 10 + ["b"] + ["a"] * 3 + ["b"] * 2
    prepared = _images_table(tmp_path / "prepared", labels, ["Train"] * 11 + ["Test"] * 5)
    settings = {"scheme": "official", "val_fraction": 0.2, "seed": 0}
    with pytest.raises(DatasetError, match="class 'b' has no case in the val role"):
        make_splits("toy", prepared, "classification", settings)


@pytest.mark.parametrize("dataset,folder", [("pancreas", "DCube_pancreas"), ("busi", "Dataset_BUSI_with_GT")])
def test_demo_classification_splits_keep_every_class_in_every_role(config, demo_root, tmp_path, dataset, folder):
    prepared = tmp_path / "prepared"
    prepare_classification(dataset, entry_for(config, dataset, demo_root / folder), prepared, 16)
    splits = make_splits(dataset, prepared, "classification", split_settings(config, dataset))
    table = pd.read_csv(prepared / "images.tsv", sep="\t", dtype={"case_id": str})
    for role in ("train", "val", "test"):
        assert set(select(table, splits, 0, role).label) == set(table.label), role


def test_more_folds_than_patients_names_the_dataset_and_the_key(spleen_prepared, config):
    from medaug.diffboost.params import split_settings as diffboost_split_settings

    settings = {**diffboost_split_settings(config, "spleen"), "n_folds": 12}
    with pytest.raises(DatasetError, match=r"dataset 'spleen' has 9 patients, too few for diffboost.folds: 12"):
        make_splits("spleen", spleen_prepared, "segmentation", settings)


def test_an_image_duplicated_across_roles_is_reported(config, demo_root, tmp_path, caplog):
    # As real BUSI ships 'benign (433)' again as 'malignant (145)': a warning and a record in
    # the split file, not an error.
    import shutil

    root = tmp_path / "busi"
    shutil.copytree(demo_root / "Dataset_BUSI_with_GT", root)
    shutil.copy(root / "benign" / "benign (1).png", root / "malignant" / "malignant (99).png")
    shutil.copy(root / "benign" / "benign (1)_mask.png", root / "malignant" / "malignant (99)_mask.png")
    prepared = tmp_path / "prepared"
    prepare_segmentation("busi", entry_for(config, "busi", root), prepared, 32, (0.5, 99.5), None, None)
    with caplog.at_level("WARNING", logger="medaug.splits"):
        splits = make_splits("busi", prepared, "segmentation", SETTINGS)
    pair = {"benign_1", "malignant_99"}
    apart = [d for d in splits["duplicates"] if set(d["roles"]) == pair]
    folds_apart = [r["fold"] for r in splits["folds"] if len({_role(r, c) for c in pair}) > 1]
    assert folds_apart and [d["fold"] for d in apart] == folds_apart
    records = {r["fold"]: r for r in splits["folds"]}
    assert all(d["roles"] == {c: _role(records[d["fold"]], c) for c in pair} for d in apart)
    assert "the same image in different roles: benign_1" in caplog.text
    assert len(splits["duplicates"]) == len(apart)  # no other pair among the demo images


def _role(record, case):
    return next(role for role in ("train", "val", "test") if case in record[role])
