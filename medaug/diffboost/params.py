"""DiffBoost's job settings, derived from the validated config.

Each function returns only the keys its job uses, so that editing an unrelated key does
not rerun the job (Snakemake's params trigger). Used by the rules (through
:mod:`medaug.diffboost.stages`) and by the standalone entry points alike.
"""

from __future__ import annotations

import math
from pathlib import Path

from medaug.config import dataset_problems, duplicate_problems, path_problem
from medaug.diffboost import paths
from medaug.paths import fill
from medaug.report.captions import data_sources, uses_stand_ins

PAPER = "diffboost"
REPRESENTATION = "segmentation"
FORMATS = ("busi", "msd")
# The pretrained weights the paper starts from: key -> what it expects. Without them (null)
# the run takes stand-ins (a small random model, Canny edges), allowed only with
# demo.allow_stand_ins.
PRETRAINED_WEIGHTS = {
    "controlnet.pretrained_model": "a local Stable Diffusion 1.5 folder in diffusers layout",
    "conditions.hed_weights": "the HED annotator checkpoint network-bsds500.pth",
}
# Keys of the diffboost section that shape the prepared slices.
PREPARE_KEYS = ("image_size", "clip_percentiles", "ct_intensity_floor", "positive_slice_min_pixels")
# Protocols: "official" selects on the test fold and scores its positive slices (the
# official code); "clean" selects on the inner validation split and scores whole volumes.
PROTOCOLS = ("official", "clean")
# Downstream arms: the MONAI segmenters of the paper, and nnU-Net (beyond the paper).
MONAI_ARM, NNUNET_ARM = "monai", "nnunet"
# Rows of the generator_quality table (medaug.diffboost.quality).
QUALITY_SOURCES = ("real", "fine-tuned", "untrained")
# Unit of HD95 and ASSD per dataset format: BUSI's PNGs carry no physical spacing.
DISTANCE_UNITS = {"busi": "px", "msd": "mm"}
# Segmenters built from segmentation.channels / strides (segmenter.build_network).
STRIDED_ARCHITECTURES = ("AttentionUnet", "UNet", "ResUNet")
# The arms that mix synthetic images in, through the random merging mask; the only ones
# whose segmenters read the mask's settings.
DIFFUSION_AUGMENTATIONS = ("DiffBoost", "DiffBoostPlus")
MERGING_MASK_KEYS = ("patch_size", "alpha")
# The datasets the paper runs its ablations on (segmentation.ablation_datasets: null).
PAPER_ABLATION_DATASETS = ("prostate",)
# Sub-folders that medaug.diffusion.models.load_pretrained_components reads.
SD_SUBFOLDERS = ("unet/", "vae/", "text_encoder/", "tokenizer/", "scheduler/")
# Lists that mean sets: each entry names its own jobs and report rows.
SET_KEYS = tuple(
    f"diffboost.{key}"
    for key in (
        "datasets",
        "run_folds",
        "sampling.ratios",
        "segmentation.seeds",
        "segmentation.protocols",
        "segmentation.ablation_datasets",
        "segmentation.ablation_patch_sizes",
        "segmentation.ablation_alphas",
        "segmentation.ablation_architectures",
        "segmentation.ablation_augmentations",
        "nnunet.datasets",
        "nnunet.folds",
        "nnunet.ratios",
        "nnunet.protocols",
    )
)


def config_problems(config: dict) -> list[str]:
    """DiffBoost's cross-key checks, one line per problem naming the key."""
    problems = dataset_problems(config, PAPER, FORMATS)
    section = config[PAPER]
    ratios = section["sampling"]["ratios"]
    seg_ratio = section["segmentation"]["ratio"]
    if seg_ratio not in ratios:
        problems.append(f"config: diffboost.segmentation.ratio: {seg_ratio} is not in sampling.ratios {ratios}")
    for ratio in section["nnunet"]["ratios"]:
        if ratio and ratio not in ratios:
            problems.append(f"config: diffboost.nnunet.ratios: {ratio} is neither 0 nor in sampling.ratios {ratios}")
    for name in section["segmentation"]["ablation_datasets"] or []:
        if name not in section["datasets"]:
            problems.append(f"config: diffboost.segmentation.ablation_datasets: '{name}' is not in diffboost.datasets")
    for name in section["nnunet"]["datasets"] or []:
        if name not in section["datasets"]:
            problems.append(f"config: diffboost.nnunet.datasets: '{name}' is not in diffboost.datasets")
    for fold in (section["run_folds"] or []) + section["nnunet"]["folds"]:
        if fold >= section["folds"]:
            problems.append(f"config: diffboost: fold {fold} does not exist with folds: {section['folds']}")
    low, high = section["clip_percentiles"]
    if not low < high:
        problems.append(f"config: diffboost.clip_percentiles: {low} must be below {high}")
    if section["controlnet"]["max_steps"] is None:
        for name in section["datasets"]:
            if name not in section["controlnet"]["epochs"]:
                problems.append(
                    f"config: diffboost.controlnet.epochs: no entry for dataset '{name}' "
                    "(give its epochs, or set diffboost.controlnet.max_steps)"
                )
    return problems + duplicate_problems(config, SET_KEYS) + _segmenter_problems(config) + _model_problems(section)


def ablation_datasets(config: dict) -> list[str]:
    """The datasets that run the ablations: ``segmentation.ablation_datasets``, or where it
    is null the paper's (prostate) if it is among ``diffboost.datasets``."""
    chosen = config[PAPER]["segmentation"]["ablation_datasets"]
    if chosen is not None:
        return list(chosen)
    return [name for name in PAPER_ABLATION_DATASETS if name in config[PAPER]["datasets"]]


def nnunet_datasets(config: dict) -> list[str]:
    """The datasets of the nnU-Net arm: ``nnunet.datasets``, or where it is null all of
    ``diffboost.datasets``."""
    chosen = config[PAPER]["nnunet"]["datasets"]
    return list(chosen) if chosen is not None else list(config[PAPER]["datasets"])


def _segmenter_problems(config: dict) -> list[str]:
    """The channels/strides pair and the slice side that each MONAI network to be built
    accepts; otherwise the segmenter jobs fail on a tensor shape mismatch."""
    section = config[PAPER]
    seg, size = section["segmentation"], section["image_size"]
    ablations = seg["ablation_architectures"] if ablation_datasets(config) else []
    built = list(dict.fromkeys([seg["architecture"], *ablations]))
    strided = [name for name in built if name in STRIDED_ARCHITECTURES]
    channels, strides = seg["channels"], seg["strides"]
    pair_ok = len(channels) >= 2 and len(strides) == len(channels) - 1
    problems = []
    if strided and not pair_ok:
        problems.append(
            f"config: diffboost.segmentation.strides: {len(strides)} strides for {len(channels)} channels; "
            f"{', '.join(strided)} need one stride between two levels (len(channels) - 1, at least 1)"
        )
    for name in built:
        if name in strided:
            if not pair_ok:
                continue
            multiple = math.prod(strides)
            # UNet's instance norm cannot train on a 1-pixel bottleneck; AttentionUnet's batch norm can.
            smallest = multiple * (1 if name == "AttentionUnet" else 2)
            rule = f"a multiple of the total stride {multiple} of segmentation.strides {strides}"
        else:  # UNETR cuts 16 px patches; SwinUNETR downsamples 32x and norms its 1/32 map
            multiple, smallest = (16, 16) if name == "UNETR" else (32, 64)
            rule = f"a multiple of {multiple}"
        if size % multiple or size < smallest:
            problems.append(
                f"config: diffboost.image_size: {size} does not fit segmentation architecture {name}: "
                f"it must be {rule}" + (f", at least {smallest}" if smallest > multiple else "")
            )
    return problems


def _model_problems(section: dict) -> list[str]:
    """Pretrained files and the phrases file exist in the form their loader reads; the
    small random model's widths fit its norms. Checked here, not hours into a job."""
    controlnet, conditions, sampling = section["controlnet"], section["conditions"], section["sampling"]
    model = controlnet["pretrained_model"]
    problems = []
    if model:
        expected = "a Stable Diffusion 1.5 folder in diffusers layout"
        problems.append(path_problem("diffboost.controlnet.pretrained_model", model, expected, True, SD_SUBFOLDERS))
    if controlnet["pretrained_controlnet"]:
        problems.append(
            path_problem(
                "diffboost.controlnet.pretrained_controlnet",
                controlnet["pretrained_controlnet"],
                "a ControlNet folder in diffusers layout",
                True,
                ("config.json",),
            )
            if model  # the small random model starts its ControlNet from its own UNet
            else "config: diffboost.controlnet.pretrained_controlnet: set, but only used with pretrained_model (null)"
        )
    if conditions["hed_weights"]:
        expected = "the HED checkpoint network-bsds500.pth"
        problems.append(path_problem("diffboost.conditions.hed_weights", conditions["hed_weights"], expected, False))
    extractor = section["quality"]["fid_extractor"]
    if extractor:
        expected = "the TorchScript Inception-v3 file inception-2015-12-05.pt"
        problems.append(path_problem("diffboost.quality.fid_extractor", extractor, expected, False))
    phrases = sampling["augmentation_phrases_file"]
    if phrases:
        key, expected = "diffboost.sampling.augmentation_phrases_file", "a text file, one augmentation phrase a line"
        problem = path_problem(key, phrases, expected, False)
        if not problem and not Path(phrases).read_text(errors="replace").strip():
            problem = f"config: {key}: '{phrases}' is empty; expected {expected}"
        problems.append(problem)
    if not model:
        tiny = controlnet["tiny_model"]
        groups, width = tiny["norm_num_groups"], tiny["text_hidden_size"]
        uneven = [c for c in tiny["block_out_channels"] if c % groups]
        if uneven:
            problems.append(
                f"config: diffboost.controlnet.tiny_model.norm_num_groups: {groups} does not divide "
                f"block_out_channels {uneven} (GroupNorm)"
            )
        heads = max(1, width // 8)  # as build_tiny_components gives the text encoder
        if width % heads:
            problems.append(
                f"config: diffboost.controlnet.tiny_model.text_hidden_size: {width} is not divisible by "
                f"its {heads} attention heads (width // 8)"
            )
    return [problem for problem in problems if problem]


def targets(config: dict) -> list[str]:
    """The final outputs: each dataset's splits and the report (tables, figures)."""
    splits = [fill(paths.SPLITS, dataset=dataset) for dataset in config[PAPER]["datasets"]]
    return splits + [paths.METRICS]


def split_settings(config: dict, dataset: str) -> dict:
    """Patient-level K-fold, unshuffled as the official code's ``KFold``."""
    section = config[PAPER]
    return {
        "scheme": "kfold",
        "n_folds": section["folds"],
        "folds_key": f"{PAPER}.folds",  # named in the error when a dataset has too few patients
        "shuffle": section["shuffle_folds"],
        "val_fraction": section["val_fraction"],
        "seed": config["seed"],
    }


def folds(config: dict) -> list[int]:
    """The folds DiffBoost trains and scores (``run_folds``, default every fold)."""
    section = config[PAPER]
    return section["run_folds"] if section["run_folds"] is not None else list(range(section["folds"]))


def prompt(config: dict, dataset: str) -> str:
    return config[PAPER]["prompts"].get(dataset, dataset)


def condition_settings(config: dict) -> dict:
    return dict(config[PAPER]["conditions"])


# Sampling texts that enter the small demo model's tokenizer vocabulary at fine-tuning time.
VOCABULARY_SAMPLING_KEYS = ("prompt_suffix", "style_prompt", "negative_prompt", "augmentation_phrases_file")


def controlnet_settings(config: dict, dataset: str) -> dict:
    """Only what this dataset's model depends on, so that a new ratio, dataset or another
    dataset's epochs never re-trigger a trained ControlNet."""
    section = config[PAPER]
    controlnet = section["controlnet"]
    return {
        "prompt": prompt(config, dataset),
        "prompts": {dataset: prompt(config, dataset)},
        "settings": {key: value for key, value in controlnet.items() if key != "epochs"},
        "sampling": {key: section["sampling"][key] for key in VOCABULARY_SAMPLING_KEYS},
        "image_size": section["image_size"],
        # Unused when max_steps is set; config_problems ensures it exists otherwise.
        "epochs": controlnet["epochs"].get(dataset) if controlnet["max_steps"] else controlnet["epochs"][dataset],
        "seed": config["seed"],
    }


def sampling_settings(config: dict) -> dict:
    sampling = dict(config[PAPER]["sampling"])
    sampling.pop("ratios")  # the ratio is the job's wildcard; the grid itself does not change a job
    return sampling


def previous_ratio(config: dict, ratio: int) -> int | None:
    """The largest configured ratio below ``ratio``, whose images a ratio reuses."""
    smaller = [r for r in config[PAPER]["sampling"]["ratios"] if r < ratio]
    return max(smaller) if smaller else None


def variants(config: dict, dataset: str) -> dict[str, dict]:
    """Downstream experiments on ``dataset``: name -> Variant fields plus the tables they
    appear in. Every dataset runs the baseline and DiffBoost at each ratio; the ablation
    datasets also run the patch-size, alpha, architecture and augmentation ablations."""
    seg = config[PAPER]["segmentation"]
    default = {"architecture": seg["architecture"], "patch_size": seg["patch_size"], "alpha": seg["alpha"]}
    found = {"baseline": {**default, "augmentation": "none", "ratio": 0, "tables": ["main", "ratio", "augmentation"]}}
    for ratio in config[PAPER]["sampling"]["ratios"]:
        tables = ["ratio"] + (
            ["main", "patch", "alpha", "architecture", "augmentation"] if ratio == seg["ratio"] else []
        )
        found[f"diffboost_r{ratio}"] = {**default, "augmentation": "DiffBoost", "ratio": ratio, "tables": tables}
    if dataset not in ablation_datasets(config):
        return found
    diffboost = {**default, "augmentation": "DiffBoost", "ratio": seg["ratio"]}
    for patch in seg["ablation_patch_sizes"]:
        found[f"diffboost_patch{patch}"] = {**diffboost, "patch_size": patch, "tables": ["patch"]}
    for alpha in seg["ablation_alphas"]:
        found[f"diffboost_alpha{alpha:g}"] = {**diffboost, "alpha": alpha, "tables": ["alpha"]}
    for architecture in seg["ablation_architectures"]:
        found[f"{architecture}_baseline"] = {
            **default,
            "architecture": architecture,
            "augmentation": "none",
            "ratio": 0,
            "tables": ["architecture"],
        }
        found[f"{architecture}_diffboost"] = {**diffboost, "architecture": architecture, "tables": ["architecture"]}
    for augmentation in seg["ablation_augmentations"]:
        ratio = seg["ratio"] if augmentation == "DiffBoostPlus" else 0
        found[f"aug_{augmentation}"] = {
            **default,
            "augmentation": augmentation,
            "ratio": ratio,
            "tables": ["augmentation"],
        }
    return found


def variant_ratio(config: dict, dataset: str, variant: str) -> int:
    return variants(config, dataset)[variant]["ratio"]


def segmenter_settings(config: dict, dataset: str, variant: str) -> dict:
    seg = config[PAPER]["segmentation"]
    keys = ("channels", "strides", "epochs", "batch_size", "learning_rate", "eval_every", "protocols")
    fields = {k: v for k, v in variants(config, dataset)[variant].items() if k != "tables"}
    if fields["augmentation"] not in DIFFUSION_AUGMENTATIONS:
        # Each job's params hold only what it reads: a merging-mask change retrains no baseline.
        fields = {k: v for k, v in fields.items() if k not in MERGING_MASK_KEYS}
    return {"variant": fields, "settings": {k: seg[k] for k in keys}, "image_size": config[PAPER]["image_size"]}


def quality_settings(config: dict, dataset: str) -> dict:
    """The generator_quality job: the generator as fine-tuned and sampled, the baseline
    segmenter's settings (for the segmenters trained on each image source) and the FID
    feature extractor."""
    return {
        "finetune": controlnet_settings(config, dataset),
        "sampling": sampling_settings(config),
        "segmenter": segmenter_settings(config, dataset, "baseline"),
        "fid_extractor": config[PAPER]["quality"]["fid_extractor"],
    }


def nnunet_settings(config: dict) -> dict:
    nnunet = config[PAPER]["nnunet"]
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
            "seed": config["seed"],
            "plot_every": nnunet["progress_plot_every"],
            "save_every": nnunet["checkpoint_every"],
        },
    }


def nnunet_labels(config: dict, ratio: int) -> dict:
    """Report labels of an nnU-Net arm run (the tables it appears in, its factors)."""
    section = config[PAPER]
    main = ratio in (0, section["segmentation"]["ratio"], max(section["nnunet"]["ratios"]))
    return {
        "arm": NNUNET_ARM,
        "variant": f"nnunet_r{ratio}",
        "architecture": "nnU-Net",
        "augmentation": "DiffBoost" if ratio else "none",
        "ratio": ratio,
        "tables": ["ratio"] + (["main"] if main else []),
    }


def distance_unit(config: dict, dataset: str) -> str:
    return DISTANCE_UNITS[config["datasets"][dataset]["format"]]


def runs(config: dict) -> list[tuple[str, dict]]:
    """(metrics file, report labels) of every downstream run of DiffBoost: the MONAI arm's
    variants x folds x seeds and the nnU-Net arm's folds x protocols x ratios."""
    section = config[PAPER]
    found = []
    for dataset in section["datasets"]:
        for variant, fields in variants(config, dataset).items():
            for fold in folds(config):
                for seed in section["segmentation"]["seeds"]:
                    path = fill(paths.SEGMENTER_METRICS, dataset=dataset, fold=fold, variant=variant, seed=seed)
                    labels = {"dataset": dataset, "distance_unit": distance_unit(config, dataset)}
                    found.append((path, {**labels, "arm": MONAI_ARM, "variant": variant, **fields}))
    nnunet = section["nnunet"]
    for dataset in nnunet_datasets(config):
        for fold in nnunet["folds"]:
            for protocol in nnunet["protocols"]:
                for ratio in nnunet["ratios"]:
                    path = fill(paths.NNUNET_METRICS, dataset=dataset, fold=fold, protocol=protocol, ratio=ratio)
                    labels = {"dataset": dataset, "distance_unit": distance_unit(config, dataset)}
                    found.append((path, {**labels, **nnunet_labels(config, ratio)}))
    return found


def sample_figure_fold(config: dict) -> int:
    """The fold whose samples the figure shows: the first fold that is run anyway."""
    return folds(config)[0]


def sample_figure_ratio(config: dict) -> int:
    """The ratio shown in the samples figure: the largest configured ratio up to 4."""
    ratios = config[PAPER]["sampling"]["ratios"]
    return max([r for r in ratios if r <= 4], default=min(ratios))


# The ablation tables of the report and the setting that fills each.
ABLATION_SETTINGS = {
    "patch": "ablation_patch_sizes",
    "alpha": "ablation_alphas",
    "architecture": "ablation_architectures",
    "augmentation": "ablation_augmentations",
}


def report_settings(config: dict) -> dict:
    """What the report job needs besides its inputs: run labels and caption lines."""
    section = config[PAPER]
    ablating = bool(ablation_datasets(config))
    run_folds = section["run_folds"] if section["run_folds"] is not None else f"all {section['folds']}"
    generator = section["controlnet"]["pretrained_model"] or "the small random demo model (not Stable Diffusion)"
    scale = (
        f"Scale: {section['image_size']} px slices, folds {run_folds}, ratios {section['sampling']['ratios']}, "
        f"{section['sampling']['ddim_steps']} DDIM steps, seeds {section['segmentation']['seeds']}, "
        f"{section['segmentation']['epochs']} segmenter epochs; generator: {generator}."
    )
    return {
        "labels": [labels for _, labels in runs(config)],
        "sample_datasets": section["datasets"],
        # The dataset of each generator-quality file, in the report's input order.
        "quality_datasets": [dataset for dataset in section["datasets"] for _ in folds(config)],
        "sample_fold": sample_figure_fold(config),
        "sample_ratio": sample_figure_ratio(config),
        "scale": scale,
        "data_sources": data_sources(config, section["datasets"]),
        "stand_in": uses_stand_ins(config, section["datasets"]),
        # Per ablation table, the values that ran besides the main setting (a caption says
        # when a table holds the main setting only, not the paper's ablation).
        "ablations": {
            table: list(section["segmentation"][key]) if ablating else [] for table, key in ABLATION_SETTINGS.items()
        },
    }
