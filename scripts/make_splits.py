"""Snakemake adapter of rule make_splits; standalone: `medaug-make-splits --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.papers import SPLIT

SPLIT.run_snakemake(snakemake)
