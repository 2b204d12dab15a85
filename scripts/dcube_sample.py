"""Snakemake adapter of rule dcube_sample; standalone: `medaug-dcube-sample --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.dcube.generator import SYNTHESIS

SYNTHESIS.run_snakemake(snakemake)
