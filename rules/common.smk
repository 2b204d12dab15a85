# Helpers and target lists only; rules live in the stage files.
import sys

sys.path.insert(0, workflow.basedir)

from medaug.config import PAPER_FORMATS, validate_config
from medaug.demo import DEMO_DATASETS
from medaug.pipeline import demo_settings, prepare_settings, split_settings

# Validate before anything else; fills in every default the schema documents.
_validated = validate_config(config)
config.clear()
config.update(_validated)

PAPERS = tuple(PAPER_FORMATS)


wildcard_constraints:
    paper="|".join(PAPERS),
    dataset="|".join(config["datasets"]),
    demo_folder="|".join(DEMO_DATASETS),


def scaled_by_attempt(base):
    """A resource that grows with each retry (a job killed at its memory or time limit)."""
    return lambda wildcards, attempt: base * attempt


def dataset_root(wildcards):
    return config["datasets"][wildcards.dataset]["root"]


def demo_settings_of(wildcards):
    return demo_settings(config, wildcards.demo_folder)


def prepare_settings_of(wildcards):
    return prepare_settings(config, wildcards.paper, wildcards.dataset)


def split_settings_of(wildcards):
    return split_settings(config, wildcards.paper, wildcards.dataset)


def paper_targets(paper):
    """Everything built so far for one paper, on each of its datasets."""
    return expand(
        "results/{paper}/{dataset}/splits.json",
        paper=paper,
        dataset=config[paper]["datasets"],
    )


def pipeline_targets():
    return [target for paper in PAPERS for target in paper_targets(paper)]


def all_targets():
    return pipeline_targets() + rules.summarize_benchmarks.output
