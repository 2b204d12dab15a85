"""Snakemake adapter of rule dcube_synthetic_quality; standalone: `medaug-dcube-synthetic-quality --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.dcube.quality import QUALITY

QUALITY.run_snakemake(snakemake)
