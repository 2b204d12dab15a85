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


# --- DiffBoost stages --------------------------------------------------------------------------


def diffboost_prompt(config: dict, dataset: str) -> str:
    return config["diffboost"]["prompts"].get(dataset, dataset)


def condition_settings(config: dict) -> dict:
    return dict(config["diffboost"]["conditions"])


# Sampling texts that enter the small demo model's tokenizer vocabulary at fine-tuning time.
VOCABULARY_SAMPLING_KEYS = ("prompt_suffix", "style_prompt", "negative_prompt", "augmentation_phrases_file")


def controlnet_settings(config: dict, dataset: str) -> dict:
    section = config["diffboost"]
    controlnet = section["controlnet"]
    # Only what this dataset's model depends on, so that a new ratio, dataset or another
    # dataset's epochs never re-trigger (params trigger) a trained ControlNet.
    return {
        "prompt": diffboost_prompt(config, dataset),
        "prompts": {dataset: diffboost_prompt(config, dataset)},
        "settings": {key: value for key, value in controlnet.items() if key != "epochs"},
        "sampling": {key: section["sampling"][key] for key in VOCABULARY_SAMPLING_KEYS},
        "image_size": section["image_size"],
        "epochs": controlnet["epochs"].get(dataset, 400),
        "seed": config["seed"],
    }


def sampling_settings(config: dict) -> dict:
    sampling = dict(config["diffboost"]["sampling"])
    sampling.pop("ratios")  # the ratio is the job's wildcard; the grid itself does not change a job
    return sampling


def previous_ratio(config: dict, ratio: int) -> int | None:
    """The largest configured ratio below ``ratio``, whose images a ratio reuses."""
    smaller = [r for r in config["diffboost"]["sampling"]["ratios"] if r < ratio]
    return max(smaller) if smaller else None


def diffboost_folds(config: dict) -> list[int]:
    """The folds DiffBoost trains and scores (``run_folds``, default every fold)."""
    section = config["diffboost"]
    return section["run_folds"] if section["run_folds"] is not None else list(range(section["folds"]))


def diffboost_variants(config: dict, dataset: str) -> dict[str, dict]:
    """Downstream experiments on ``dataset``: name -> Variant fields plus the tables they
    appear in. Every dataset runs the baseline and DiffBoost at each ratio; the ablation
    datasets also run the patch-size, alpha, architecture and augmentation ablations."""
    seg = config["diffboost"]["segmentation"]
    default = {"architecture": seg["architecture"], "patch_size": seg["patch_size"], "alpha": seg["alpha"]}
    variants = {
        "baseline": {**default, "augmentation": "none", "ratio": 0, "tables": ["main", "ratio", "augmentation"]}
    }
    for ratio in config["diffboost"]["sampling"]["ratios"]:
        tables = ["ratio"] + (
            ["main", "patch", "alpha", "architecture", "augmentation"] if ratio == seg["ratio"] else []
        )
        variants[f"diffboost_r{ratio}"] = {**default, "augmentation": "DiffBoost", "ratio": ratio, "tables": tables}
    if dataset not in seg["ablation_datasets"]:
        return variants
    diffboost = {**default, "augmentation": "DiffBoost", "ratio": seg["ratio"]}
    for patch in seg["ablation_patch_sizes"]:
        variants[f"diffboost_patch{patch}"] = {**diffboost, "patch_size": patch, "tables": ["patch"]}
    for alpha in seg["ablation_alphas"]:
        variants[f"diffboost_alpha{alpha:g}"] = {**diffboost, "alpha": alpha, "tables": ["alpha"]}
    for architecture in seg["ablation_architectures"]:
        variants[f"{architecture}_baseline"] = {
            **default,
            "architecture": architecture,
            "augmentation": "none",
            "ratio": 0,
            "tables": ["architecture"],
        }
        variants[f"{architecture}_diffboost"] = {**diffboost, "architecture": architecture, "tables": ["architecture"]}
    for augmentation in seg["ablation_augmentations"]:
        ratio = seg["ratio"] if augmentation == "DiffBoostPlus" else 0
        variants[f"aug_{augmentation}"] = {
            **default,
            "augmentation": augmentation,
            "ratio": ratio,
            "tables": ["augmentation"],
        }
    return variants


def segmenter_settings(config: dict, dataset: str, variant: str) -> dict:
    seg = config["diffboost"]["segmentation"]
    keys = ("channels", "strides", "epochs", "batch_size", "learning_rate", "eval_every", "protocols")
    fields = {k: v for k, v in diffboost_variants(config, dataset)[variant].items() if k != "tables"}
    return {"variant": fields, "settings": {k: seg[k] for k in keys}, "image_size": config["diffboost"]["image_size"]}


def nnunet_settings(config: dict) -> dict:
    nnunet = config["diffboost"]["nnunet"]
    short = nnunet["trainer"] == "nnUNetTrainer_medaug"
    return {
        "trainer": nnunet["trainer"],
        "trainer_settings": {
            "epochs": nnunet["epochs"],
            "iters": nnunet["iterations_per_epoch"],
            "val_iters": nnunet["validation_iterations_per_epoch"],
            "batch": nnunet["batch_size"],
            # The short trainer skips nnU-Net's own final validation: we score the test set.
            "skip_final_val": short or None,
        },
    }


def nnunet_labels(config: dict, ratio: int) -> dict:
    """Report labels of an nnU-Net arm run (the tables it appears in, its factors)."""
    main = ratio in (0, config["diffboost"]["segmentation"]["ratio"], max(config["diffboost"]["nnunet"]["ratios"]))
    return {
        "arm": "nnunet",
        "variant": f"nnunet_r{ratio}",
        "architecture": "nnU-Net",
        "augmentation": "DiffBoost" if ratio else "none",
        "ratio": ratio,
        "tables": ["ratio"] + (["main"] if main else []),
    }


def diffboost_runs(config: dict) -> list[tuple[str, dict]]:
    """(metrics file, report labels) of every downstream run of DiffBoost: the paper arm's
    variants x folds x seeds and the nnU-Net arm's folds x protocols x ratios."""
    section = config["diffboost"]
    runs = []
    for dataset in section["datasets"]:
        for variant, fields in diffboost_variants(config, dataset).items():
            for fold in diffboost_folds(config):
                for seed in section["segmentation"]["seeds"]:
                    path = f"results/diffboost/{dataset}/fold{fold}/segmentation/{variant}/seed{seed}/metrics.tsv"
                    runs.append((path, {"dataset": dataset, "arm": "paper", "variant": variant, **fields}))
    nnunet = section["nnunet"]
    for dataset in nnunet["datasets"]:
        for fold in nnunet["folds"]:
            for protocol in nnunet["protocols"]:
                for ratio in nnunet["ratios"]:
                    path = f"results/diffboost/{dataset}/fold{fold}/nnunet/{protocol}/ratio{ratio}/metrics.tsv"
                    runs.append((path, {"dataset": dataset, **nnunet_labels(config, ratio)}))
    return runs


# --- report captions ---------------------------------------------------------------------------

# Where make_demo_dataset writes its generated stand-ins of the real datasets.
DEMO_DATA_DIR = "resources/demo"


def data_sources(config: dict, datasets: list[str]) -> str:
    """Caption line naming each dataset's folder and flagging generated stand-ins, so that a
    figure made on stand-in data can never pass for one made on the real dataset."""
    parts = []
    for name in datasets:
        root = config["datasets"][name]["root"]
        stand_in = Path(root).as_posix().startswith(DEMO_DATA_DIR + "/")
        parts.append(f"{name} from ``{root}``" + (" (generated stand-in, not the real dataset)" if stand_in else ""))
    return "Data: " + "; ".join(parts) + "."


def diffboost_scale(config: dict) -> str:
    """Caption line with the settings that set a DiffBoost run's scale."""
    section = config["diffboost"]
    folds = section["run_folds"] if section["run_folds"] is not None else f"all {section['folds']}"
    generator = section["controlnet"]["pretrained_model"] or "the small random demo model (not Stable Diffusion)"
    return (
        f"Scale: {section['image_size']} px slices, folds {folds}, ratios {section['sampling']['ratios']}, "
        f"{section['sampling']['ddim_steps']} DDIM steps, seeds {section['segmentation']['seeds']}, "
        f"{section['segmentation']['epochs']} segmenter epochs; generator: {generator}."
    )
