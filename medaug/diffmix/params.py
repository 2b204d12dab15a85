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


def label_map_settings(config: dict) -> dict:
    """The virtual label maps' settings (GradMix balancing and enlarging)."""
    return {**config[PAPER]["label_maps"], "seed": config["seed"]}


def label_map_jobs(config: dict) -> list[dict]:
    section = config[PAPER]
    return [{"dataset": d, "map_kind": k} for d in section["datasets"] for k in section["label_maps"]["kinds"]]


def report_settings(config: dict) -> dict:
    """What the report job needs besides its inputs: job labels and caption lines."""
    from medaug.report.captions import data_sources

    section = config[PAPER]
    return {
        "label_maps": label_map_jobs(config),
        "scale": f"Scale: {section['patch_size']} px patches; virtual maps of kinds {section['label_maps']['kinds']}.",
        "data_sources": data_sources(config, section["datasets"]),
    }


def targets(config: dict) -> list[str]:
    """The final outputs built so far: each dataset's splits and the tables."""
    from medaug.diffmix import paths as diffmix_paths

    splits = [paths.fill(paths.SPLITS, paper=PAPER, dataset=dataset) for dataset in config[PAPER]["datasets"]]
    return splits + [diffmix_paths.TABLES]
