"""D-Cube's job settings, derived from the validated config.

Each function returns only the keys its job uses, so that editing an unrelated key does not
rerun the job (Snakemake's params trigger).
"""

from __future__ import annotations

from medaug import paths
from medaug.config import dataset_problems, duplicate_problems, path_problem
from medaug.dcube import paths as dcube_paths
from medaug.report.captions import data_sources, uses_stand_ins

PAPER = "dcube"
REPRESENTATION = "classification"
FORMATS = ("class_tree", "busi")
# The pretrained weights the paper starts from (the registry reads PRETRAINED_WEIGHTS of each paper).
PRETRAINED_WEIGHTS = {
    "classifier.imagenet_weights": "torchvision's ImageNet ResNet50 file resnet50-11ad3fa6.pth (IMAGENET1K_V2)",
}
# Keys of the dcube section that shape the prepared images.
PREPARE_KEYS = ("image_size",)
PROTOCOLS = ("official", "clean")
# Classifier models: the plain CNN baseline, D-Cube with its blocks, D-Cube with an
# ablation's blocks ("dcube_blocks6-8").
BASELINE, DCUBE, ABLATION_PREFIX = "cnn", "dcube", "dcube_blocks"
MODEL_PATTERN = r"cnn|dcube|dcube_blocks\d+(?:-\d+)*"
SCENARIO_PATTERN = r"full|minority[0-9.]+|limited[0-9.]+"
SET_KEYS = tuple(
    f"dcube.{key}"
    for key in (
        "datasets",
        "seeds",
        "synthesis.counts",
        "scenarios.minority_fractions",
        "scenarios.training_fractions",
    )
)


def config_problems(config: dict) -> list[str]:
    problems = dataset_problems(config, PAPER, FORMATS)
    section = config[PAPER]
    diffusion, blocks, classifier = section["diffusion"], section["blocks"], section["classifier"]
    size, patch = section["image_size"], diffusion["patch_size"]
    if size % patch:
        problems.append(f"config: dcube.diffusion.patch_size: {patch} does not divide dcube.image_size {size}")
    if diffusion["depth"] % 2:
        problems.append(f"config: dcube.diffusion.depth: {diffusion['depth']} must be even")
    if diffusion["embed_dim"] % diffusion["num_heads"]:
        problems.append(
            f"config: dcube.diffusion.embed_dim: {diffusion['embed_dim']} is not a multiple of num_heads "
            f"{diffusion['num_heads']}"
        )
    if not diffusion["beta_start"] < diffusion["beta_end"]:
        problems.append("config: dcube.diffusion.beta_start must be below beta_end")
    block_count = diffusion["depth"] + 1
    for key, chosen in [("use", blocks["use"] or [])] + [("ablations", a) for a in blocks["ablations"]]:
        if not chosen and key == "ablations":
            problems.append("config: dcube.blocks.ablations: an empty block set")
        for index in chosen:
            if index >= block_count:
                problems.append(
                    f"config: dcube.blocks.{key}: block {index} does not exist (the U-ViT of depth "
                    f"{diffusion['depth']} has blocks 0..{block_count - 1})"
                )
    if blocks["count"] > block_count:
        problems.append(f"config: dcube.blocks.count: {blocks['count']} is more than the {block_count} blocks")
    if classifier["imagenet_weights"] and classifier["resnet_width"] != 64:
        problems.append("config: dcube.classifier.imagenet_weights: ImageNet weights need resnet_width 64")
    if classifier["imagenet_weights"]:
        problem = path_problem(
            "dcube.classifier.imagenet_weights", classifier["imagenet_weights"], "a torchvision ResNet .pth", False
        )
        problems += [problem] if problem else []
    extractor = section["quality"]["feature_extractor"]
    if extractor:
        problem = path_problem("dcube.quality.feature_extractor", extractor, "an Inception TorchScript file", False)
        problems += [problem] if problem else []
    return problems + duplicate_problems(config, SET_KEYS)


def split_settings(config: dict, dataset: str) -> dict:
    """Class trees have an official Train/Test; other sources get a stratified holdout."""
    section = config[PAPER]
    settings = {"val_fraction": section["val_fraction"], "seed": config["seed"]}
    if config["datasets"][dataset]["format"] == "class_tree":
        return {"scheme": "official", **settings}
    return {"scheme": "holdout", "test_fraction": section["test_fraction"], **settings}


def targets(config: dict) -> list[str]:
    """Every dataset's splits and the report (tables, figures)."""
    splits = [paths.fill(paths.SPLITS, paper=PAPER, dataset=dataset) for dataset in config[PAPER]["datasets"]]
    return splits + [dcube_paths.METRICS, dcube_paths.TABLES, dcube_paths.FIGURES]


# --- the grid of jobs --------------------------------------------------------------------------------


def scenarios(config: dict) -> list[str]:
    section = config[PAPER]["scenarios"]
    return (
        ["full"]
        + [f"minority{f:g}" for f in section["minority_fractions"]]
        + [f"limited{f:g}" for f in section["training_fractions"]]
    )


def ablation_models(config: dict) -> list[str]:
    return [ABLATION_PREFIX + "-".join(map(str, sorted(blocks))) for blocks in config[PAPER]["blocks"]["ablations"]]


def counts(config: dict) -> list[int]:
    return [0, *config[PAPER]["synthesis"]["counts"]]


def runs(config: dict) -> list[dict]:
    """Every classifier job's wildcards: both models with and without synthetic images in
    every scenario, and the block ablations on the full data."""
    section = config[PAPER]
    found = []
    for dataset in section["datasets"]:
        for scenario in scenarios(config):
            for model in (BASELINE, DCUBE):
                for count in counts(config):
                    found += [
                        {
                            "dataset": dataset,
                            "scenario": scenario,
                            "model": model,
                            "synthetic_count": count,
                            "seed": seed,
                        }
                        for seed in section["seeds"]
                    ]
        for model in ablation_models(config):
            found += [
                {"dataset": dataset, "scenario": "full", "model": model, "synthetic_count": 0, "seed": seed}
                for seed in section["seeds"]
            ]
    return found


def generator_jobs(config: dict) -> list[dict]:
    return [{"dataset": d, "scenario": s} for d in config[PAPER]["datasets"] for s in scenarios(config)]


def quality_jobs(config: dict) -> list[dict]:
    """The synthetic-quality check: the largest synthetic set of the full data."""
    largest = max(config[PAPER]["synthesis"]["counts"])
    return [{"dataset": d, "scenario": "full", "synthetic_count": largest} for d in config[PAPER]["datasets"]]


def quality_reference(config: dict) -> dict:
    """The classifier that judges synthetic images: the baseline on real full data, first seed."""
    return {"scenario": "full", "model": BASELINE, "synthetic_count": 0, "seed": config[PAPER]["seeds"][0]}


# --- settings per stage --------------------------------------------------------------------------------


def _schedule(section: dict) -> dict:
    diffusion = section["diffusion"]
    return {key: diffusion[key] for key in ("num_train_timesteps", "beta_start", "beta_end")}


def generator_settings(config: dict) -> dict:
    section = config[PAPER]
    diffusion = section["diffusion"]
    model_keys = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias")
    run_keys = (
        "contrastive_margin",
        "same_class_probability",
        "learning_rate",
        "weight_decay",
        "batch_size",
        "epochs",
        "checkpointing_epochs",
        "mixed_precision",
        "ema_decay",
    )
    return {
        "model": {key: diffusion[key] for key in model_keys},
        "schedule": _schedule(section),
        **{key: diffusion[key] for key in run_keys},
        "image_size": section["image_size"],
        "minority_class": section["scenarios"]["minority_class"],
        "seed": config["seed"],
    }


def block_settings(config: dict) -> dict:
    section = config[PAPER]
    return {
        "use": section["blocks"]["use"],
        "count": section["blocks"]["count"],
        "num_train_timesteps": section["diffusion"]["num_train_timesteps"],
        "minority_class": section["scenarios"]["minority_class"],
        "seed": config["seed"],
    }


def synthesis_settings(config: dict) -> dict:
    section = config[PAPER]
    synthesis = section["synthesis"]
    return {
        "schedule": _schedule(section),
        **{key: synthesis[key] for key in ("sampler", "ddim_steps", "ddim_eta", "batch_size")},
        "seed": synthesis["seed"],
    }


def model_blocks(model: str) -> list[int] | None:
    """The blocks an ablation model name fixes, or None."""
    if model.startswith(ABLATION_PREFIX):
        return [int(index) for index in model[len(ABLATION_PREFIX) :].split("-")]
    return None


def classifier_settings(config: dict, model: str) -> dict:
    section = config[PAPER]
    classifier = section["classifier"]
    settings = {
        "model": BASELINE if model == BASELINE else DCUBE,
        **{key: classifier[key] for key in ("epochs", "batch_size", "learning_rate", "weight_decay")},
        "baseline_network": classifier["baseline_network"],
        "resnet_width": classifier["resnet_width"],
        "imagenet_weights": classifier["imagenet_weights"],
        "num_timesteps": section["diffusion"]["num_train_timesteps"],
        "minority_class": section["scenarios"]["minority_class"],
    }
    if model != BASELINE:
        settings |= {key: classifier[key] for key in ("consistency_weight", "hyper_grid", "guidance_network")}
        settings["blocks"] = model_blocks(model) or section["blocks"]["use"]
    return settings


def quality_settings(config: dict) -> dict:
    section = config[PAPER]
    return {
        "feature_extractor": section["quality"]["feature_extractor"],
        "baseline_network": section["classifier"]["baseline_network"],
        "resnet_width": section["classifier"]["resnet_width"],
        "seed": config["seed"],
    }


def report_settings(config: dict) -> dict:
    """What the report job needs besides its inputs: run labels and caption lines."""
    section = config[PAPER]
    diffusion, classifier, synthesis = section["diffusion"], section["classifier"], section["synthesis"]
    scale = (
        f"Scale: {section['image_size']} px images; U-ViT {diffusion['embed_dim']} wide, depth {diffusion['depth']}, "
        f"{diffusion['epochs']} epochs; classifiers {classifier['epochs']} epochs, seeds {section['seeds']}; "
        f"synthetic counts {synthesis['counts']} ({synthesis['sampler']} sampler); scenarios {scenarios(config)}."
    )
    return {
        "scale": scale,
        "runs": runs(config),
        "generators": generator_jobs(config),
        "quality": quality_jobs(config),
        "counts": counts(config),
        "scenarios": scenarios(config),
        "ablations": ablation_models(config),
        "blocks_use": section["blocks"]["use"],
        "minority_class": section["scenarios"]["minority_class"],
        "data_sources": data_sources(config, section["datasets"]),
        "stand_in": uses_stand_ins(config, section["datasets"]),
    }
