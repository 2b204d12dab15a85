"""Snakemake adapter of rule sample_synthetic; standalone: `medaug-sample-synthetic --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.diffboost.generator import SAMPLE

SAMPLE.run_snakemake(snakemake)
