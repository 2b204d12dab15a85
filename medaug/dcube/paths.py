"""D-Cube's result-path templates (Snakemake ``{wildcard}`` syntax), the only place they are spelled."""

from __future__ import annotations

from medaug import paths

PAPER = "dcube"
RESULTS = paths.of_paper(paths.PAPER_RESULTS, PAPER)
PREPARED = paths.of_paper(paths.PREPARED, PAPER)
SPLITS = paths.of_paper(paths.SPLITS, PAPER)
SCENARIO = RESULTS + "/{dataset}/{scenario}"
GENERATOR = SCENARIO + "/generator"
# Resumable checkpoints beside, not inside, the declared model folder (Snakemake deletes the
# outputs of a failed job).
GENERATOR_STATE = SCENARIO + "/generator_state"
BLOCKS = SCENARIO + "/blocks.json"
SYNTHETIC = SCENARIO + "/synthetic/count{synthetic_count}"
CLASSIFIER = SCENARIO + "/classifier/{model}/syn{synthetic_count}/seed{seed}"
PREDICTIONS = CLASSIFIER + "/predictions.tsv"
CLASSIFIER_RECORD = CLASSIFIER + "/training.json"
CLASSIFIER_WEIGHTS = CLASSIFIER + "/classifier.safetensors"
SYNTHETIC_QUALITY = SCENARIO + "/synthetic_quality/count{synthetic_count}.json"
METRICS = RESULTS + "/metrics.tsv"
TABLES = RESULTS + "/tables"
FIGURES = RESULTS + "/figures"
