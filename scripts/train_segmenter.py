"""Snakemake adapter of rule train_segmenter; standalone: `medaug-train-segmenter --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.diffboost.segmenter import SEGMENT

SEGMENT.run_snakemake(snakemake)
