"""DiffMix's job settings, derived from the validated config.

Each function returns only the keys its job uses, so that editing an unrelated key does not
rerun the job (Snakemake's params trigger).
"""

from __future__ import annotations

import math

from medaug import paths
from medaug.config import dataset_problems, duplicate_problems, path_problem

PAPER = "diffmix"
REPRESENTATION = "nuclei"
FORMATS = ("consep", "glysac")
# DiffMix trains its SDM from scratch, as the paper; its HoVer-Net encoder's ImageNet weights
# have no config key (both phases train the whole network, see docs/replication.md).
PRETRAINED_WEIGHTS: dict[str, str] = {}
# Keys of the diffmix section that shape the prepared patches.
PREPARE_KEYS = ("patch_size", "patch_stride")
BASELINE, GRADMIX, DIFFMIX = "baseline", "gradmix", "diffmix"
ARM_PATTERN = "baseline|gradmix|diffmix"
SET_KEYS = tuple(
    f"diffmix.{key}" for key in ("datasets", "label_maps.kinds", "hovernet.arms", "hovernet.ratios", "hovernet.seeds")
)


def config_problems(config: dict) -> list[str]:
    problems = dataset_problems(config, PAPER, FORMATS)
    section = config[PAPER]
    generator, hovernet = section["generator"], section["hovernet"]
    for dataset, checkpoint in generator["checkpoints"].items():
        if dataset not in section["datasets"]:
            problems.append(f"config: diffmix.generator.checkpoints: {dataset!r} is not in diffmix.datasets")
        problem = path_problem(f"diffmix.generator.checkpoints.{dataset}", checkpoint, "an SDM checkpoint", False)
        problems += [problem] if problem else []
    if generator["crop_size"] > section["patch_size"]:
        problems.append(
            f"config: diffmix.generator.crop_size: {generator['crop_size']} is larger than diffmix.patch_size "
            f"{section['patch_size']} (the SDM renders patches of that size)"
        )
    if generator["schedule"]["beta_start"] >= generator["schedule"]["beta_end"]:
        problems.append("config: diffmix.generator.schedule.beta_start must be below beta_end")
    missing = sorted(set(hovernet["map_kinds"]) - set(section["label_maps"]["kinds"]))
    if DIFFMIX in hovernet["arms"] and missing:
        problems.append(f"config: diffmix.hovernet.map_kinds: {missing} not in diffmix.label_maps.kinds")
    if GRADMIX in hovernet["arms"] and "balancing" not in section["label_maps"]["kinds"]:
        problems.append("config: diffmix.hovernet.arms: gradmix needs balancing in diffmix.label_maps.kinds")
    if GRADMIX in hovernet["arms"] and min(hovernet["ratios"]) > 1:
        problems.append(
            "config: diffmix.hovernet.arms: gradmix runs the ratios up to 1 (one GradMix patch per real patch), "
            f"diffmix.hovernet.ratios has none: {hovernet['ratios']}"
        )
    if len(hovernet["epochs"]) != len(hovernet["batch_sizes"]):
        problems.append("config: diffmix.hovernet.batch_sizes: give one per phase of diffmix.hovernet.epochs")
    if hovernet["network"] == "hovernet" and section["patch_size"] != 256:
        problems.append(
            f"config: diffmix.hovernet.network: hovernet (fast mode) takes 256 px patches, diffmix.patch_size is "
            f"{section['patch_size']}"
        )
    return problems + duplicate_problems(config, SET_KEYS)


def split_settings(config: dict, dataset: str) -> dict:
    """The dataset's official Train/Test, with an inner validation split held out of Train."""
    return {"scheme": "official", "val_fraction": config[PAPER]["val_fraction"], "seed": config["seed"]}


def label_map_settings(config: dict) -> dict:
    """The virtual label maps' settings (GradMix balancing and enlarging)."""
    return {**config[PAPER]["label_maps"], "seed": config["seed"]}


def label_map_jobs(config: dict) -> list[dict]:
    section = config[PAPER]
    return [{"dataset": d, "map_kind": k} for d in section["datasets"] for k in section["label_maps"]["kinds"]]


def generator_settings(config: dict, dataset: str) -> dict:
    """The SDM's training settings, or the official checkpoint that replaces training."""
    generator = config[PAPER]["generator"]
    settings = {key: value for key, value in generator.items() if key != "checkpoints"}
    return {**settings, "checkpoint": generator["checkpoints"].get(dataset), "seed": config["seed"]}


def synthesis_settings(config: dict) -> dict:
    generator = config[PAPER]["generator"]
    return {
        **config[PAPER]["synthesis"],
        **generator["schedule"],
        "patch_size": config[PAPER]["patch_size"],
        "rare_class": config[PAPER]["label_maps"]["rare_class"],
        "seed": config["seed"],
    }


def ratio_label(ratio: float) -> str:
    return f"{ratio:g}"


def hovernet_runs(config: dict) -> list[dict]:
    """Every HoVer-Net job's wildcards: the baseline (ratio 0) and each synthetic arm at each
    ratio (the gradmix arm up to ratio 1: it has one GradMix patch per real patch), per
    dataset and seed."""
    section = config[PAPER]
    hovernet = section["hovernet"]
    runs = []
    for dataset in section["datasets"]:
        for arm in hovernet["arms"]:
            ratios = [0] if arm == BASELINE else hovernet["ratios"]
            if arm == GRADMIX:
                ratios = [ratio for ratio in ratios if ratio <= 1]
            for ratio in ratios:
                for seed in hovernet["seeds"]:
                    runs.append({"dataset": dataset, "arm": arm, "ratio": ratio_label(ratio), "seed": str(seed)})
    return runs


def hovernet_settings(config: dict, arm: str) -> dict:
    section = config[PAPER]
    hovernet = {key: value for key, value in section["hovernet"].items() if key not in ("arms", "ratios", "seeds")}
    if arm != DIFFMIX:
        hovernet.pop("map_kinds")
    return {**hovernet, "rare_class": section["label_maps"]["rare_class"], "patch_size": section["patch_size"]}


def synthetic_needed(ratio: float, real_patches: int) -> int:
    """Synthetic patches of a run at ``ratio``: the nearest whole number to ratio x real."""
    return int(math.floor(ratio * real_patches + 0.5))


def report_settings(config: dict) -> dict:
    """What the report job needs besides its inputs: job labels and caption lines."""
    from medaug.report.captions import data_sources, uses_stand_ins

    section = config[PAPER]
    hovernet = section["hovernet"]
    return {
        "datasets": list(section["datasets"]),
        "label_maps": label_map_jobs(config),
        "hovernet": hovernet_runs(config),
        "synthesis": [{"dataset": d, "map_kind": k} for d in section["datasets"] for k in synthesis_kinds(config)],
        "rare_class": section["label_maps"]["rare_class"],
        "scale": (
            f"Scale: {section['patch_size']} px patches; virtual maps of kinds {section['label_maps']['kinds']}; "
            f"SDM {section['generator']['pretrain']['steps']} + {section['generator']['finetune']['steps']} steps "
            f"at {section['generator']['crop_size']} px; HoVer-Net network {hovernet['network']}, epochs "
            f"{hovernet['epochs']}, seeds {hovernet['seeds']}."
        ),
        "data_sources": data_sources(config, section["datasets"]),
        "stand_in": uses_stand_ins(config, section["datasets"]),
    }


def synthesis_kinds(config: dict) -> list[str]:
    """Map kinds whose SDEdit patches some arm uses."""
    hovernet = config[PAPER]["hovernet"]
    return list(hovernet["map_kinds"]) if DIFFMIX in hovernet["arms"] else []


def targets(config: dict) -> list[str]:
    """Each dataset's splits, the tables and the figures."""
    from medaug.diffmix import paths as diffmix_paths

    splits = [paths.fill(paths.SPLITS, paper=PAPER, dataset=dataset) for dataset in config[PAPER]["datasets"]]
    return splits + [diffmix_paths.TABLES, diffmix_paths.FIGURES]
