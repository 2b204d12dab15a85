"""Snakemake adapter of rule nnunet_train; standalone: `medaug-nnunet-train --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.diffboost.nnunet_arm import TRAIN

TRAIN.run_snakemake(snakemake)
