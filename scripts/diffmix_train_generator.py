"""Snakemake adapter of rule diffmix_train_generator; standalone: `medaug-diffmix-train-generator --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.diffmix.generator import GENERATOR

GENERATOR.run_snakemake(snakemake)
