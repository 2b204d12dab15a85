"""Snakemake adapter of rule generator_quality; standalone: `medaug-generator-quality --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.diffboost.quality import QUALITY

QUALITY.run_snakemake(snakemake)
