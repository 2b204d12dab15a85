"""Snakemake adapter of rule make_demo_dataset; standalone: `medaug-make-demo-dataset --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.demo import DEMO

DEMO.run_snakemake(snakemake)
