"""Snakemake adapter of rule nnunet_plan; standalone: `medaug-nnunet-plan --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.diffboost.nnunet_arm import PLAN

PLAN.run_snakemake(snakemake)
