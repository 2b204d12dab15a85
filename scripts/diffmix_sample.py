"""Snakemake adapter of rule diffmix_sample; standalone: `medaug-diffmix-sample --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.diffmix.sampling import SYNTHESIS

SYNTHESIS.run_snakemake(snakemake)
