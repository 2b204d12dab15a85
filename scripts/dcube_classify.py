"""Snakemake adapter of rule dcube_classify; standalone: `medaug-dcube-classify --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.dcube.classifier import CLASSIFY

CLASSIFY.run_snakemake(snakemake)
