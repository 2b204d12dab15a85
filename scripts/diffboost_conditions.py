"""Snakemake adapter of rule diffboost_conditions; standalone: `medaug-diffboost-conditions --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.diffboost.generator import CONDITIONS

CONDITIONS.run_snakemake(snakemake)
