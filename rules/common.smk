# Helpers and target lists only; rules live in the stage files.
import sys

sys.path.insert(0, workflow.basedir)

from medaug.config import PAPER_FORMATS, validate_config
from medaug.demo import DEMO_DATASETS
from medaug.pipeline import (
    condition_settings,
    controlnet_settings,
    data_sources,
    demo_settings,
    diffboost_folds,
    diffboost_runs,
    diffboost_scale,
    diffboost_variants,
    nnunet_labels,
    nnunet_settings,
    prepare_settings,
    previous_ratio,
    sampling_settings,
    segmenter_settings,
    split_settings,
)

# Validate before anything else; fills in every default the schema documents.
_validated = validate_config(config)
config.clear()
config.update(_validated)

PAPERS = tuple(PAPER_FORMATS)


wildcard_constraints:
    paper="|".join(PAPERS),
    dataset="|".join(config["datasets"]),
    demo_folder="|".join(DEMO_DATASETS),
    fold=r"\d+",
    ratio=r"\d+",
    seed=r"\d+",
    variant=r"[A-Za-z0-9_.]+",
    protocol="paper|clean",


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


def controlnet_settings_of(wildcards):
    return controlnet_settings(config, wildcards.dataset)


def sampling_inputs(wildcards):
    base = f"results/diffboost/{wildcards.dataset}"
    inputs = {
        "model": f"{base}/fold{wildcards.fold}/controlnet",
        "prepared": f"{base}/prepared",
        "conditions": f"{base}/conditions",
        "splits": f"{base}/splits.json",
    }
    previous = previous_ratio(config, int(wildcards.ratio))
    if previous is not None:
        inputs["previous"] = f"{base}/fold{wildcards.fold}/synthetic/ratio{previous}"
    return inputs


def segmenter_inputs(wildcards):
    base = f"results/diffboost/{wildcards.dataset}"
    inputs = {"prepared": f"{base}/prepared", "splits": f"{base}/splits.json"}
    ratio = diffboost_variants(config, wildcards.dataset)[wildcards.variant]["ratio"]
    if ratio:
        inputs["synthetic"] = f"{base}/fold{wildcards.fold}/synthetic/ratio{ratio}"
    return inputs


def nnunet_train_inputs(wildcards):
    base = f"results/diffboost/{wildcards.dataset}"
    inputs = {
        "prepared": f"{base}/prepared",
        "splits": f"{base}/splits.json",
        "plans": f"{base}/fold{wildcards.fold}/nnunet/{wildcards.protocol}/real_plans.json",
    }
    if int(wildcards.ratio):
        inputs["synthetic"] = (
            f"{base}/fold{wildcards.fold}/synthetic/ratio{wildcards.ratio}"
        )
    return inputs


def segmenter_settings_of(wildcards):
    return segmenter_settings(config, wildcards.dataset, wildcards.variant)


def sample_ratio():
    """The ratio shown in the samples figure: the largest configured ratio up to 4."""
    ratios = config["diffboost"]["sampling"]["ratios"]
    return max([r for r in ratios if r <= 4], default=min(ratios))


def diffboost_report_inputs(wildcards):
    datasets = config["diffboost"]["datasets"]
    return {
        "metrics": [path for path, _ in diffboost_runs(config)],
        "prepared": [f"results/diffboost/{d}/prepared" for d in datasets],
        "conditions": [f"results/diffboost/{d}/conditions" for d in datasets],
        "synthetic": [
            f"results/diffboost/{d}/fold0/synthetic/ratio{sample_ratio()}"
            for d in datasets
        ],
    }


def diffboost_metric_labels():
    return [labels for _, labels in diffboost_runs(config)]


def paper_targets(paper):
    """Everything built so far for one paper, on each of its datasets."""
    targets = expand(
        "results/{paper}/{dataset}/splits.json",
        paper=paper,
        dataset=config[paper]["datasets"],
    )
    if paper == "diffboost":
        targets += rules.diffboost_report.output
    return targets


def pipeline_targets():
    return [target for paper in PAPERS for target in paper_targets(paper)]


def all_targets():
    return pipeline_targets() + rules.summarize_benchmarks.output
