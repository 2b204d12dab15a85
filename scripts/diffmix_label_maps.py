"""Snakemake adapter of rule diffmix_label_maps; standalone: `medaug-diffmix-label-maps --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.diffmix.label_maps import LABEL_MAPS

LABEL_MAPS.run_snakemake(snakemake)
