"""Parameters of each pipeline job, derived from the validated config.

The rules pass these dicts as ``params`` and the scripts' standalone mode rebuilds them
from a config file, so both run a job with the same arguments. Each dict holds only the
keys its job uses, so that editing an unrelated key does not rerun the job.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from medaug.config import validate_config

REPRESENTATIONS = {"diffboost": "segmentation", "diffmix": "nuclei", "dcube": "classification"}


def load_config(path: str | Path) -> dict:
    return validate_config(yaml.safe_load(Path(path).read_text()) or {})


def demo_settings(config: dict, folder: str) -> dict:
    from medaug.demo import DEMO_DATASETS

    key, _ = DEMO_DATASETS[folder]
    return {"seed": config["seed"], "params": config["demo"][key]}


def prepare_settings(config: dict, paper: str, dataset: str) -> dict:
    section = config[paper]
    entry = config["datasets"][dataset]
    if paper == "diffboost":
        keys = ("image_size", "clip_percentiles", "ct_intensity_floor", "positive_slice_min_pixels")
    elif paper == "diffmix":
        keys = ("patch_size", "patch_stride")
    else:
        keys = ("image_size",)
    return {"name": dataset, "entry": entry, **{k: section[k] for k in keys}}


def split_settings(config: dict, paper: str, dataset: str) -> dict:
    section = config[paper]
    if paper == "diffboost":
        return {
            "scheme": "kfold",
            "n_folds": section["folds"],
            "shuffle": section["shuffle_folds"],
            "val_fraction": section["val_fraction"],
            "seed": config["seed"],
        }
    if paper == "diffmix":
        return {"scheme": "official", "val_fraction": section["val_fraction"], "seed": config["seed"]}
    official = config["datasets"][dataset]["format"] == "class_tree"
    settings = {"val_fraction": section["val_fraction"], "seed": config["seed"]}
    if official:
        return {"scheme": "official", **settings}
    return {"scheme": "holdout", "test_fraction": section["test_fraction"], **settings}
