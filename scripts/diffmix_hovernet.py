"""Snakemake adapter of rule diffmix_hovernet; standalone: `medaug-diffmix-hovernet --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.diffmix.downstream import HOVERNET

HOVERNET.run_snakemake(snakemake)
