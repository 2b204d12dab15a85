"""Snakemake adapter of rule list_dataset_files; standalone: `medaug-list-dataset-files --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.manifests import MANIFEST

MANIFEST.run_snakemake(snakemake)
