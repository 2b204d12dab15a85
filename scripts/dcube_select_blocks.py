"""Snakemake adapter of rule dcube_select_blocks; standalone: `medaug-dcube-select-blocks --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.dcube.generator import BLOCKS

BLOCKS.run_snakemake(snakemake)
