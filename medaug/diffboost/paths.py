"""DiffBoost's result-path templates (Snakemake ``{wildcard}`` syntax), the only place they are spelled."""

from __future__ import annotations

from medaug import paths

PAPER = "diffboost"
RESULTS = paths.of_paper(paths.PAPER_RESULTS, PAPER)
PREPARED = paths.of_paper(paths.PREPARED, PAPER)
SPLITS = paths.of_paper(paths.SPLITS, PAPER)
CONDITIONS = RESULTS + "/{dataset}/conditions"
FOLD = RESULTS + "/{dataset}/fold{fold}"
CONTROLNET = FOLD + "/controlnet"
# Resumable checkpoints live beside, not inside, the declared model folder, so that
# Snakemake's clean-up of a failed job cannot delete them.
CONTROLNET_STATE = FOLD + "/controlnet_state"
SYNTHETIC = FOLD + "/synthetic/ratio{ratio}"
GENERATOR_QUALITY = FOLD + "/generator_quality.json"
SEGMENTER = FOLD + "/segmentation/{variant}/seed{seed}"
SEGMENTER_METRICS = SEGMENTER + "/metrics.tsv"
SEGMENTER_RECORD = SEGMENTER + "/training.json"
NNUNET = FOLD + "/nnunet/{protocol}"
NNUNET_PLANS = NNUNET + "/real_plans.json"
NNUNET_METRICS = NNUNET + "/ratio{ratio}/metrics.tsv"
METRICS = RESULTS + "/metrics.tsv"
TABLES = RESULTS + "/tables"
RATIO_FIGURE = RESULTS + "/figures/dice_vs_ratio.png"
RATIO_FIGURE_SVG = RESULTS + "/figures/dice_vs_ratio.svg"
SAMPLES_FIGURE = RESULTS + "/figures/samples.png"
