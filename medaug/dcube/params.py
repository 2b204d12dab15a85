"""D-Cube's job settings, derived from the validated config."""

from __future__ import annotations

from medaug import paths
from medaug.config import dataset_problems

PAPER = "dcube"
REPRESENTATION = "classification"
FORMATS = ("class_tree", "busi")
# Keys of the dcube section that shape the prepared images.
PREPARE_KEYS = ("image_size",)


def config_problems(config: dict) -> list[str]:
    return dataset_problems(config, PAPER, FORMATS)


def split_settings(config: dict, dataset: str) -> dict:
    """Class trees have an official Train/Test; other sources get a stratified holdout."""
    section = config[PAPER]
    settings = {"val_fraction": section["val_fraction"], "seed": config["seed"]}
    if config["datasets"][dataset]["format"] == "class_tree":
        return {"scheme": "official", **settings}
    return {"scheme": "holdout", "test_fraction": section["test_fraction"], **settings}


def targets(config: dict) -> list[str]:
    """The final outputs built so far: each dataset's splits."""
    return [paths.fill(paths.SPLITS, paper=PAPER, dataset=dataset) for dataset in config[PAPER]["datasets"]]
