"""D-Cube's stage specs: for each rule, how its job's inputs, outputs and settings follow from
the config and the wildcards. The work of each stage is defined beside its function
(``generator``, ``classifier``, ``quality``, ``report``)."""

from __future__ import annotations

from medaug.dcube import params, paths
from medaug.paths import fill
from medaug.stage import Spec

CHECKS = (params.config_problems,)


def _data(w: dict) -> dict:
    return {"prepared": fill(paths.PREPARED, **w), "splits": fill(paths.SPLITS, **w)}


GENERATOR = Spec(
    name="dcube_train_generator",
    description="Train D-Cube's class-conditional U-ViT with the contrastive loss on one scenario's training "
    "images (step 1, resumable).",
    wildcards=("dataset", "scenario"),
    inputs=lambda config, w: _data(w),
    outputs=lambda config, w: {"model": fill(paths.GENERATOR, **w)},
    settings=lambda config, w: {**params.generator_settings(config), "state_dir": fill(paths.GENERATOR_STATE, **w)},
    checks=CHECKS,
)

BLOCKS = Spec(
    name="dcube_select_blocks",
    description="Rank the U-ViT's blocks by how well their features separate the classes (ANOVA p-values on "
    "training images) and write the blocks the classifier uses.",
    wildcards=("dataset", "scenario"),
    inputs=lambda config, w: {**_data(w), "model": fill(paths.GENERATOR, **w)},
    outputs=lambda config, w: {"blocks": fill(paths.BLOCKS, **w)},
    settings=lambda config, w: params.block_settings(config),
    checks=CHECKS,
)

SYNTHESIS = Spec(
    name="dcube_sample",
    description="Sample a class-balanced set of synthetic images from one scenario's U-ViT.",
    wildcards=("dataset", "scenario", "synthetic_count"),
    inputs=lambda config, w: {"model": fill(paths.GENERATOR, **w)},
    outputs=lambda config, w: {"synthetic": fill(paths.SYNTHETIC, **w)},
    settings=lambda config, w: params.synthesis_settings(config),
    checks=CHECKS,
)


def classifier_inputs(config: dict, w: dict) -> dict:
    inputs = _data(w)
    if w["model"] != "cnn":
        inputs["generator"] = fill(paths.GENERATOR, **w)
        inputs["blocks"] = fill(paths.BLOCKS, **w)
    if int(w["synthetic_count"]):
        inputs["synthetic"] = fill(paths.SYNTHETIC, **w)
    return inputs


CLASSIFY = Spec(
    name="dcube_classify",
    description="Train one classifier (the D-Cube head on frozen U-ViT features, or the plain CNN baseline) on one "
    "scenario's real images plus a synthetic count, and predict the test split under both protocols.",
    wildcards=("dataset", "scenario", "model", "synthetic_count", "seed"),
    inputs=classifier_inputs,
    outputs=lambda config, w: {
        "predictions": fill(paths.PREDICTIONS, **w),
        "record": fill(paths.CLASSIFIER_RECORD, **w),
        "weights": fill(paths.CLASSIFIER_WEIGHTS, **w),
    },
    settings=lambda config, w: params.classifier_settings(config, w["model"]),
    checks=CHECKS,
)


def quality_inputs(config: dict, w: dict) -> dict:
    reference = params.quality_reference(config)
    return {
        **_data(w),
        "synthetic": fill(paths.SYNTHETIC, **w),
        "classifier": fill(paths.CLASSIFIER_WEIGHTS, **{**w, **reference}),
    }


QUALITY = Spec(
    name="dcube_synthetic_quality",
    description="Per class: FID/KID of the synthetic images against the real training images, and how often the "
    "baseline classifier (trained on real images only) recognises each synthetic image's class.",
    wildcards=("dataset", "scenario", "synthetic_count"),
    inputs=quality_inputs,
    outputs=lambda config, w: {"quality": fill(paths.SYNTHETIC_QUALITY, **w)},
    settings=lambda config, w: params.quality_settings(config),
    checks=CHECKS,
)


def report_inputs(config: dict, w: dict) -> dict:
    runs, quality = params.runs(config), params.quality_jobs(config)
    return {
        "predictions": [fill(paths.PREDICTIONS, **run) for run in runs],
        "blocks": [fill(paths.BLOCKS, **s) for s in params.generator_jobs(config)],
        "quality": [fill(paths.SYNTHETIC_QUALITY, **q) for q in quality],
        "synthetic": [fill(paths.SYNTHETIC, **q) for q in quality],
        # the real training images shown beside the synthetic ones
        "prepared": [fill(paths.PREPARED, **q) for q in quality],
        "splits": [fill(paths.SPLITS, **q) for q in quality],
    }


REPORT = Spec(
    name="dcube_report",
    description="D-Cube's metrics, tables and figures from every classifier run.",
    inputs=report_inputs,
    outputs=lambda config, w: {
        "metrics": paths.METRICS,
        "tables": paths.TABLES,
        "figures": paths.FIGURES,
    },
    settings=lambda config, w: params.report_settings(config),
    checks=CHECKS,
)
