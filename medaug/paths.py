"""Path templates of the stages every paper shares, in Snakemake's ``{wildcard}`` syntax.

The rules, the standalone entry points and the code that reads results all fill these
templates; each paper's own templates live in its package (``medaug/<paper>/paths.py``).
"""

from __future__ import annotations

DEMO_DATA_DIR = "resources/demo"
DEMO_DATASET = DEMO_DATA_DIR + "/{demo_folder}"
MANIFEST = "results/manifests/{dataset}.json"
PAPER_RESULTS = "results/{paper}"
PREPARED = PAPER_RESULTS + "/{dataset}/prepared"
SPLITS = PAPER_RESULTS + "/{dataset}/splits.json"
BENCHMARKS = "benchmarks"
BENCHMARK_JOBS = "results/benchmarks/jobs.tsv"
BENCHMARK_SUMMARY = "results/benchmarks/summary.tsv"


def of_paper(template: str, paper: str) -> str:
    """``template`` with its ``{paper}`` filled and every other wildcard left open."""
    return template.replace("{paper}", paper)


def fill(template: str, **wildcards: object) -> str:
    """A template with every wildcard filled."""
    return template.format(**wildcards)


def is_demo_data(root: str) -> bool:
    """Whether a dataset root is one of the generated stand-ins under ``DEMO_DATA_DIR``."""
    from pathlib import Path

    return Path(root).as_posix().startswith(DEMO_DATA_DIR + "/")
