"""DiffBoost's stage specs: for each rule, how its job's inputs, outputs and settings follow
from the config and the wildcards. The rules read these (with Snakemake's own dependencies
only); the work of each stage is defined beside its function (``generator``, ``segmenter``,
``nnunet_arm``, ``report``), which also hold the stages' console scripts.
"""

from __future__ import annotations

from medaug.diffboost import params, paths
from medaug.paths import fill
from medaug.stage import Spec

CHECKS = (params.config_problems,)


# --- condition maps -------------------------------------------------------------------------------


CONDITIONS = Spec(
    name="diffboost_conditions",
    description="Condition maps (image edges + mask contour) of every prepared DiffBoost slice.",
    wildcards=("dataset",),
    inputs=lambda config, w: {"prepared": fill(paths.PREPARED, **w)},
    outputs=lambda config, w: {"conditions": fill(paths.CONDITIONS, **w)},
    settings=lambda config, w: params.condition_settings(config),
    checks=CHECKS,
)


# --- ControlNet fine-tuning -----------------------------------------------------------------------


def controlnet_inputs(config: dict, w: dict) -> dict:
    return {
        "prepared": fill(paths.PREPARED, **w),
        "conditions": fill(paths.CONDITIONS, **w),
        "splits": fill(paths.SPLITS, **w),
    }


def controlnet_settings(config: dict, w: dict) -> dict:
    return {**params.controlnet_settings(config, w["dataset"]), "state_dir": fill(paths.CONTROLNET_STATE, **w)}


FINETUNE = Spec(
    name="finetune_controlnet",
    description="Fine-tune DiffBoost's ControlNet on one fold's development slices (resumable).",
    wildcards=("dataset", "fold"),
    inputs=controlnet_inputs,
    outputs=lambda config, w: {"model": fill(paths.CONTROLNET, **w)},
    settings=controlnet_settings,
    checks=CHECKS,
)


# --- sampling -------------------------------------------------------------------------------------


def sampling_inputs(config: dict, w: dict) -> dict:
    inputs = {
        "model": fill(paths.CONTROLNET, **w),
        "prepared": fill(paths.PREPARED, **w),
        "conditions": fill(paths.CONDITIONS, **w),
        "splits": fill(paths.SPLITS, **w),
    }
    previous = params.previous_ratio(config, int(w["ratio"]))
    if previous is not None:
        inputs["previous"] = fill(paths.SYNTHETIC, **{**w, "ratio": previous})
    return inputs


SAMPLE = Spec(
    name="sample_synthetic",
    description="Sample one ratio's synthetic slices for one fold, reusing the smaller ratio's images.",
    wildcards=("dataset", "fold", "ratio"),
    inputs=sampling_inputs,
    outputs=lambda config, w: {"synthetic": fill(paths.SYNTHETIC, **w)},
    settings=lambda config, w: params.sampling_settings(config),
    checks=CHECKS,
)


# --- generator quality ----------------------------------------------------------------------------


def quality_inputs(config: dict, w: dict) -> dict:
    # Image 1 of each slice is in every ratio's folder: read the smallest one.
    ratio = min(config[params.PAPER]["sampling"]["ratios"])
    return {
        "prepared": fill(paths.PREPARED, **w),
        "conditions": fill(paths.CONDITIONS, **w),
        "splits": fill(paths.SPLITS, **w),
        "synthetic": fill(paths.SYNTHETIC, **w, ratio=ratio),
    }


QUALITY = Spec(
    name="generator_quality",
    description="Measure whether the fine-tuned generator follows its condition (inside-vs-ring contrast, "
    "correlation with the source slice), how close its images are to real ones (FID, KID, nearest real slice) and "
    "whether they teach a segmenter, beside real slices and the generator before fine-tuning.",
    wildcards=("dataset", "fold"),
    inputs=quality_inputs,
    outputs=lambda config, w: {"quality": fill(paths.GENERATOR_QUALITY, **w)},
    settings=lambda config, w: params.quality_settings(config, w["dataset"]),
    checks=CHECKS,
)


# --- the MONAI segmenter arm ----------------------------------------------------------------------


def segmenter_inputs(config: dict, w: dict) -> dict:
    inputs = {"prepared": fill(paths.PREPARED, **w), "splits": fill(paths.SPLITS, **w)}
    ratio = params.variant_ratio(config, w["dataset"], w["variant"])
    if ratio:
        inputs["synthetic"] = fill(paths.SYNTHETIC, **{**w, "ratio": ratio})
    return inputs


SEGMENT = Spec(
    name="train_segmenter",
    description="Train one MONAI segmenter variant (each protocol) and score the fold's test cases.",
    wildcards=("dataset", "fold", "variant", "seed"),
    inputs=segmenter_inputs,
    outputs=lambda config, w: {
        "metrics": fill(paths.SEGMENTER_METRICS, **w),
        "record": fill(paths.SEGMENTER_RECORD, **w),
    },
    settings=lambda config, w: params.segmenter_settings(config, w["dataset"], w["variant"]),
    checks=CHECKS,
)


# --- the nnU-Net arm ------------------------------------------------------------------------------


NNUNET_PLAN = Spec(
    name="nnunet_plan",
    description="nnU-Net arm: write the real-only dataset of one fold and protocol and plan it.",
    wildcards=("dataset", "fold", "protocol"),
    inputs=lambda config, w: {"prepared": fill(paths.PREPARED, **w), "splits": fill(paths.SPLITS, **w)},
    outputs=lambda config, w: {"plans": fill(paths.NNUNET_PLANS, **w)},
    checks=CHECKS,
)


def nnunet_train_inputs(config: dict, w: dict) -> dict:
    inputs = {
        "prepared": fill(paths.PREPARED, **w),
        "splits": fill(paths.SPLITS, **w),
        "plans": fill(paths.NNUNET_PLANS, **w),
    }
    if int(w["ratio"]):
        inputs["synthetic"] = fill(paths.SYNTHETIC, **w)
    return inputs


NNUNET_TRAIN = Spec(
    name="nnunet_train",
    description="nnU-Net arm: train on real (+ synthetic at one ratio) slices, predict and score the test cases.",
    wildcards=("dataset", "fold", "protocol", "ratio"),
    inputs=nnunet_train_inputs,
    outputs=lambda config, w: {"metrics": fill(paths.NNUNET_METRICS, **w)},
    settings=lambda config, w: params.nnunet_settings(config),
    checks=CHECKS,
)


# --- report ---------------------------------------------------------------------------------------


def report_inputs(config: dict, w: dict) -> dict:
    datasets = config[params.PAPER]["datasets"]
    fold, ratio = params.sample_figure_fold(config), params.sample_figure_ratio(config)
    return {
        "metrics": [path for path, _ in params.runs(config)],
        "prepared": [fill(paths.PREPARED, dataset=d) for d in datasets],
        "conditions": [fill(paths.CONDITIONS, dataset=d) for d in datasets],
        "synthetic": [fill(paths.SYNTHETIC, dataset=d, fold=fold, ratio=ratio) for d in datasets],
        "quality": [fill(paths.GENERATOR_QUALITY, dataset=d, fold=f) for d in datasets for f in params.folds(config)],
    }


REPORT = Spec(
    name="diffboost_report",
    description="DiffBoost's tables (CSV, Markdown, HTML) and figures from every downstream run's metrics.",
    inputs=report_inputs,
    outputs=lambda config, w: {
        "metrics": paths.METRICS,
        "tables": paths.TABLES,
        "ratio_png": paths.RATIO_FIGURE,
        "ratio_svg": paths.RATIO_FIGURE_SVG,
        "samples": paths.SAMPLES_FIGURE,
    },
    settings=lambda config, w: params.report_settings(config),
    checks=CHECKS,
)
