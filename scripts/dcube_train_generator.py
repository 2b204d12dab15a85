"""Snakemake adapter of rule dcube_train_generator; standalone: `medaug-dcube-train-generator --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.dcube.generator import GENERATOR

GENERATOR.run_snakemake(snakemake)
