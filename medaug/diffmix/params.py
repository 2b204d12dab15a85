"""DiffMix's job settings, derived from the validated config."""

from __future__ import annotations

from medaug import paths
from medaug.config import dataset_problems

PAPER = "diffmix"
REPRESENTATION = "nuclei"
FORMATS = ("consep", "glysac")
# Keys of the diffmix section that shape the prepared patches.
PREPARE_KEYS = ("patch_size", "patch_stride")


def config_problems(config: dict) -> list[str]:
    return dataset_problems(config, PAPER, FORMATS)


def split_settings(config: dict, dataset: str) -> dict:
    """The dataset's official Train/Test, with an inner validation split held out of Train."""
    return {"scheme": "official", "val_fraction": config[PAPER]["val_fraction"], "seed": config["seed"]}


def targets(config: dict) -> list[str]:
    """The final outputs built so far: each dataset's splits."""
    return [paths.fill(paths.SPLITS, paper=PAPER, dataset=dataset) for dataset in config[PAPER]["datasets"]]
