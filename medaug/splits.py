"""Splits, made once per dataset and read by every later rule.

A split file holds ``folds``; each fold assigns every case to exactly one of ``train``,
``val`` (inner validation of the "clean" protocol) and ``test``. Assignment is by
*group* (patient, or tile), never by slice or patch, so all slices of a test patient are
test slices. Later rules select their inputs with :func:`select`, which is the only way
a role's cases are looked up.

Roles that rules ask for:
- ``train``, ``val``, ``test``: as assigned;
- ``development``: train + val, i.e. everything but the test cases. The diffusion models
  train on it, and so do the segmenters of the paper protocol (which select on test).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medaug.errors import DatasetError, MedaugError
from medaug.seeds import keyed_rng

log = logging.getLogger(__name__)

ASSIGNED_ROLES = ("train", "val", "test")
ROLES = {"train": ("train",), "val": ("val",), "test": ("test",), "development": ("train", "val")}


class LeakageError(MedaugError):
    """A split lets a test case (or a slice of a test patient) reach training."""


def _ordered_groups(table: pd.DataFrame, group_column: str) -> list[str]:
    return list(dict.fromkeys(table[group_column].astype(str)))


def _holdout(
    groups: Sequence[str], fraction: float, rng: np.random.Generator, strata: dict[str, str] | None = None
) -> set[str]:
    """Pick ``fraction`` of ``groups`` (at least one per stratum with two or more)."""
    chosen: set[str] = set()
    by_stratum: dict[str, list[str]] = {}
    for group in groups:
        by_stratum.setdefault(strata[group] if strata else "", []).append(group)
    for members in by_stratum.values():
        if len(members) < 2:
            continue
        count = min(max(1, int(round(fraction * len(members)))), len(members) - 1)
        chosen.update(rng.choice(members, size=count, replace=False).tolist())
    return chosen


def _fold_record(
    fold: int,
    cases: pd.DataFrame,
    group_column: str,
    development: Sequence[str],
    test: set[str],
    val_fraction: float,
    seed: int,
    strata: dict[str, str] | None = None,
) -> dict:
    """Hold validation groups out of ``development`` and list each role's case ids."""
    val = _holdout(development, val_fraction, keyed_rng(seed, "val", fold), strata)
    roles = {"train": set(development) - val, "val": val, "test": test}
    groups = cases[group_column].astype(str)
    record = {"fold": fold}
    for role in ASSIGNED_ROLES:
        record[role] = cases.case_id[groups.isin(roles[role])].astype(str).tolist()
    return record


def _split_file(scheme: str, group_column: str, seed: int, folds: list[dict]) -> dict:
    return {"scheme": scheme, "group_column": group_column, "seed": seed, "folds": folds}


def kfold_splits(
    cases: pd.DataFrame,
    n_folds: int,
    val_fraction: float,
    seed: int,
    group_column: str = "patient_id",
    shuffle: bool = False,
) -> dict:
    """Group-level K-fold with an inner validation split per fold.

    Without ``shuffle`` the folds are contiguous blocks of groups in table order, as
    scikit-learn's ``KFold(n_splits)`` (no shuffle) makes them in the official
    code; the first ``n % k`` folds get one group more.
    """
    groups = _ordered_groups(cases, group_column)
    if len(groups) < n_folds:
        raise MedaugError(f"{len(groups)} {group_column} values cannot make {n_folds} folds")
    if shuffle:
        groups = keyed_rng(seed, "kfold").permutation(groups).tolist()
    sizes = [len(groups) // n_folds + (1 if k < len(groups) % n_folds else 0) for k in range(n_folds)]
    folds, start = [], 0
    for fold, size in enumerate(sizes):
        test = set(groups[start : start + size])
        start += size
        development = [g for g in groups if g not in test]
        folds.append(_fold_record(fold, cases, group_column, development, test, val_fraction, seed))
    return _split_file(f"{n_folds}-fold", group_column, seed, folds)


def official_splits(
    cases: pd.DataFrame,
    split_column: str,
    val_fraction: float,
    seed: int,
    group_column: str = "patient_id",
    stratify_column: str | None = None,
) -> dict:
    """The dataset's own Train/Test, with inner validation held out of Train."""
    official = cases[split_column].astype(str).str.lower()
    train_groups = _ordered_groups(cases[official == "train"], group_column)
    test_groups = set(_ordered_groups(cases[official == "test"], group_column))
    strata = _strata(cases, group_column, stratify_column)
    fold = _fold_record(0, cases, group_column, train_groups, test_groups, val_fraction, seed, strata)
    return _split_file("official", group_column, seed, [fold])


def holdout_splits(
    cases: pd.DataFrame,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    group_column: str = "patient_id",
    stratify_column: str | None = None,
) -> dict:
    """Stratified train/val/test for sources without an official test split."""
    groups = _ordered_groups(cases, group_column)
    strata = _strata(cases, group_column, stratify_column)
    test = _holdout(groups, test_fraction, keyed_rng(seed, "test", 0), strata)
    development = [g for g in groups if g not in test]
    fold = _fold_record(0, cases, group_column, development, test, val_fraction, seed, strata)
    return _split_file("holdout", group_column, seed, [fold])


def _strata(cases: pd.DataFrame, group_column: str, stratify_column: str | None) -> dict[str, str] | None:
    if stratify_column is None:
        return None
    return dict(zip(cases[group_column].astype(str), cases[stratify_column].astype(str), strict=True))


def role_cases(splits: dict, fold: int, role: str) -> set[str]:
    """Case ids of ``role`` in ``fold``."""
    if role not in ROLES:
        raise ValueError(f"unknown role '{role}' (known: {', '.join(ROLES)})")
    record = splits["folds"][fold]
    return {case for part in ROLES[role] for case in record[part]}


def select(units: pd.DataFrame, splits: dict, fold: int, role: str) -> pd.DataFrame:
    """Rows of ``units`` (cases, slices, patches: any table with ``case_id``) in ``role``."""
    return units[units.case_id.astype(str).isin(role_cases(splits, fold, role))]


def check_no_leakage(splits: dict, units: pd.DataFrame, group_column: str = "patient_id") -> None:
    """Raise LeakageError unless, in every fold, each case has exactly one role and no
    group (patient, tile) with a test unit has a unit in any other role.

    ``units`` may be the case table or a finer one (slices, patches) carrying
    ``case_id`` and ``group_column``; checking the finest table proves that no slice of
    a test patient can be selected for training, validation or diffusion training.
    """
    all_cases = set(units.case_id.astype(str))
    for record in splits["folds"]:
        fold = record["fold"]
        assigned = [case for role in ASSIGNED_ROLES for case in record[role]]
        duplicated = sorted({c for c in assigned if assigned.count(c) > 1})
        if duplicated:
            raise LeakageError(f"fold {fold}: cases in more than one role: {duplicated[:5]}")
        missing = sorted(all_cases - set(assigned))
        if missing:
            raise LeakageError(f"fold {fold}: cases in no role (silently dropped): {missing[:5]}")
        test_groups = set(select(units, splits, fold, "test")[group_column].astype(str))
        for role in ("train", "val", "development"):
            shared = test_groups & set(select(units, splits, fold, role)[group_column].astype(str))
            if shared:
                raise LeakageError(f"fold {fold}: {group_column} {sorted(shared)[:5]} in both test and {role}")


def check_classes_present(dataset: str, table_path: Path, cases: pd.DataFrame, splits: dict, column: str) -> None:
    """Every class must have a case in every role of every fold.

    A class missing from test (or val) leaves its per-class metrics undefined and the
    macro averages silently over fewer classes. Holdouts keep one of a class only where
    it has at least two cases in the pool they are drawn from.
    """
    labels = cases.set_index(cases.case_id.astype(str))[column].astype(str)
    for record in splits["folds"]:
        for role in reversed(ASSIGNED_ROLES):  # test first: the gap that matters most
            present = set(labels.loc[record[role]])
            missing = [label for label in dict.fromkeys(labels) if label not in present]
            if missing:
                total = int((labels == missing[0]).sum())
                official = splits["scheme"] == "official" and role != "val"
                why = "the official split has none" if official else "a holdout needs at least 2 in its pool"
                raise DatasetError(
                    table_path,
                    f"dataset '{dataset}': class '{missing[0]}' has no case in the {role} role of fold "
                    f"{record['fold']}, so its per-class metrics would be undefined ({total} case(s) in all; {why})",
                )


@dataclass(frozen=True)
class Tables:
    """Which tables of a prepared dataset splits read."""

    cases: str  # one row per case (the unit that splits assign)
    units: str  # the finest unit (slice, patch, image), checked for leakage
    official_split_column: str | None  # the dataset's own Train/Test, where it has one
    stratify_column: str | None  # class column that holdouts keep balanced


# Per representation (the names of medaug.preparation.REPRESENTATIONS).
TABLES = {
    "segmentation": Tables("cases.tsv", "slices.tsv", None, None),
    "nuclei": Tables("tiles.tsv", "patches.tsv", "split", None),
    "classification": Tables("images.tsv", "images.tsv", "source_split", "label"),
}


def make_splits(dataset: str, prepared_dir: str, representation: str, settings: dict) -> dict:
    """Split a prepared dataset, check it for leakage on its finest units, add counts."""
    tables = TABLES[representation]
    prepared = Path(prepared_dir)
    cases = pd.read_csv(prepared / tables.cases, sep="\t", dtype={"case_id": str, "patient_id": str})
    units = pd.read_csv(prepared / tables.units, sep="\t", dtype={"case_id": str, "patient_id": str})
    stratify = tables.stratify_column
    scheme = settings["scheme"]
    if scheme == "kfold":
        patients = len(_ordered_groups(cases, "patient_id"))
        if patients < settings["n_folds"]:
            key = settings.get("folds_key", "folds")
            raise DatasetError(
                prepared / tables.cases,
                f"dataset '{dataset}' has {patients} patients, too few for {key}: {settings['n_folds']} "
                "(each fold tests at least one patient); lower it",
            )
        splits = kfold_splits(
            cases, settings["n_folds"], settings["val_fraction"], settings["seed"], shuffle=settings["shuffle"]
        )
    elif scheme == "official":
        splits = official_splits(
            cases, tables.official_split_column, settings["val_fraction"], settings["seed"], stratify_column=stratify
        )
    else:
        splits = holdout_splits(
            cases, settings["test_fraction"], settings["val_fraction"], settings["seed"], stratify_column=stratify
        )
    check_no_leakage(splits, units)
    if stratify is not None:
        check_classes_present(dataset, prepared / tables.cases, cases, splits, stratify)
    for record in splits["folds"]:
        record["counts"] = {
            role: {
                "cases": len(record[role]),
                tables.units.removesuffix(".tsv"): int(len(select(units, splits, record["fold"], role))),
            }
            for role in ASSIGNED_ROLES
        }
    splits["dataset"] = dataset
    splits["representation"] = representation
    splits["duplicates"] = report_duplicates(dataset, cases, splits)
    return splits


def report_duplicates(dataset: str, cases: pd.DataFrame, splits: dict) -> list[dict]:
    """Cases whose images have the same pixels (``pixel_sha256`` of the prepared tables)
    yet sit in different roles of a fold, such as a training and a test image: each is
    logged as a warning and listed in the split file. Not an error: public datasets ship
    such pairs (real BUSI: 'benign (433)' is 'malignant (145)'), and whether to drop one is
    the researcher's call."""
    if "pixel_sha256" not in cases:
        return []
    found = []
    for _, group in cases.groupby("pixel_sha256", sort=False):
        if len(group) < 2:
            continue
        ids = group.case_id.astype(str).tolist()
        for record in splits["folds"]:
            roles = {case: next(r for r in ASSIGNED_ROLES if case in record[r]) for case in ids}
            if len(set(roles.values())) > 1:
                found.append({"fold": record["fold"], "roles": roles})
                where = ", ".join(f"{case} ({role})" for case, role in roles.items())
                log.warning(
                    "dataset '%s' fold %d: the same image in different roles: %s", dataset, record["fold"], where
                )
    return found
