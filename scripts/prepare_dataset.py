"""Snakemake adapter of rule prepare_dataset; standalone: `medaug-prepare-dataset --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.papers import PREPARE

PREPARE.run_snakemake(snakemake)
