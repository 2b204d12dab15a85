"""Snakemake adapter of rule summarize_benchmarks; standalone: `medaug-summarize-benchmarks --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.benchmarks import SUMMARY

SUMMARY.run_snakemake(snakemake)
