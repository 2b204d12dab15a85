"""The paper registry: which papers the pipeline runs, and the stages that every paper shares.

Each paper's ``params`` module says what the registry needs of it: ``REPRESENTATION`` (the
2D form its datasets are prepared to, :data:`medaug.preparation.REPRESENTATIONS`),
``FORMATS`` (the dataset formats it reads), ``PREPARE_KEYS`` (the keys of its config
section that shape the prepared data), ``split_settings``, ``config_problems`` (its
cross-key config checks) and ``targets`` (its final outputs); its ``claims`` module lists
what its demo claims about trained models (``CLAIMS``). The shared core never
imports this module or a paper package; the Snakefile and the shared stages do.
"""

from __future__ import annotations

from medaug import config as core_config
from medaug import paths
from medaug.dcube import params as dcube
from medaug.diffboost import params as diffboost
from medaug.diffmix import params as diffmix
from medaug.stage import Job, Spec, Stage

PAPERS = {module.PAPER: module for module in (diffboost, diffmix, dcube)}
CHECKS = tuple(module.config_problems for module in PAPERS.values())


def validate_config(config: dict) -> dict:
    """The config validated against the schema and every paper's cross-key checks."""
    return core_config.validate_config(config, CHECKS)


def load_config(config_files: list[str]) -> dict:
    return core_config.load_config(config_files, CHECKS)


def stand_in_problems(config: dict) -> list[str]:
    """Unless ``demo.allow_stand_ins``: every dataset root that is a generated stand-in and
    every pretrained weight left null by a paper that runs, one line each, with the key and
    what it expects (``core_config.validate_config`` has checked that the others exist)."""
    if config["demo"]["allow_stand_ins"]:
        return []
    problems = []
    for name in used_datasets(config):
        root = config["datasets"][name]["root"]
        if paths.is_demo_data(root):
            problems.append(
                f"config: datasets.{name}.root: '{root}' is a generated stand-in; "
                f"expected the {name} dataset folder as downloaded"
            )
    for paper, module in PAPERS.items():
        if not config[paper]["datasets"]:
            continue
        for key, expected in module.PRETRAINED_WEIGHTS.items():
            section, name = key.split(".")
            if config[paper][section][name] is None:
                problems.append(f"config: {paper}.{key}: null (a stand-in takes its place); expected {expected}")
    if problems:
        header = (
            "config: demo.allow_stand_ins is false, so every dataset and pretrained weight must be real; "
            "set the keys below (or demo.allow_stand_ins: true to rehearse on stand-ins and random models):"
        )
        problems.insert(0, header)
    return problems


def targets(config: dict, paper: str) -> list[str]:
    """Everything built so far for one paper, on each of its datasets."""
    return PAPERS[paper].targets(config)


def demo_claims(paper: str | None = None) -> list:
    """The demo's claims (:class:`medaug.claims.Claim`) of ``paper``, or of every paper."""
    import importlib

    names = [paper] if paper else list(PAPERS)
    return [claim for name in names for claim in importlib.import_module(f"medaug.{name}.claims").CLAIMS]


def used_datasets(config: dict) -> list[str]:
    """The datasets some paper runs on, each once."""
    return list(dict.fromkeys(name for paper in PAPERS for name in config[paper]["datasets"]))


def all_targets(config: dict) -> list[str]:
    return [target for paper in PAPERS for target in targets(config, paper)]


# --- the stages every paper runs: preparation and splits ---------------------------------------


def prepare_settings(config: dict, wildcards: dict) -> dict:
    paper = PAPERS[wildcards["paper"]]
    dataset = wildcards["dataset"]
    section = config[paper.PAPER]
    return {
        "representation": paper.REPRESENTATION,
        "prepare": {
            "name": dataset,
            "entry": config["datasets"][dataset],
            **{k: section[k] for k in paper.PREPARE_KEYS},
        },
    }


def _prepare(job: Job) -> None:
    from medaug.manifests import check_listing
    from medaug.preparation import prepare

    check_listing(job.inputs["manifest"])
    prepare(job.settings["representation"], job.outputs["prepared"], job.settings["prepare"])


PREPARE = Stage(
    Spec(
        name="prepare_dataset",
        description="Read a dataset through its adapter and write a paper's 2D representation of it.",
        wildcards=("paper", "dataset"),
        inputs=lambda config, w: {
            "root": config["datasets"][w["dataset"]]["root"],
            # The root folder's time stamp misses a file replaced inside it; the manifest does not.
            "manifest": paths.fill(paths.MANIFEST, dataset=w["dataset"]),
        },
        outputs=lambda config, w: {"prepared": paths.fill(paths.PREPARED, **w)},
        settings=prepare_settings,
        checks=CHECKS,
    ),
    _prepare,
)


def split_settings(config: dict, wildcards: dict) -> dict:
    paper = PAPERS[wildcards["paper"]]
    return {"representation": paper.REPRESENTATION, "split": paper.split_settings(config, wildcards["dataset"])}


def _split(job: Job) -> None:
    from medaug.io import write_json
    from medaug.splits import make_splits

    settings = job.settings
    splits = make_splits(
        job.wildcards["dataset"], job.inputs["prepared"], settings["representation"], settings["split"]
    )
    write_json(job.outputs["splits"], splits)


SPLIT = Stage(
    Spec(
        name="make_splits",
        description="Split a prepared dataset (patient-level folds, official or stratified train/val/test), "
        "prove the split leakage-free and write it as JSON.",
        wildcards=("paper", "dataset"),
        inputs=lambda config, w: {"prepared": paths.fill(paths.PREPARED, **w)},
        outputs=lambda config, w: {"splits": paths.fill(paths.SPLITS, **w)},
        settings=split_settings,
        checks=CHECKS,
    ),
    _split,
)

prepare_entry = PREPARE.entry
split_entry = SPLIT.entry
