"""Snakemake adapter of rule finetune_controlnet; standalone: `medaug-finetune-controlnet --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.diffboost.generator import FINETUNE

FINETUNE.run_snakemake(snakemake)
