"""Snakemake adapter of rule diffmix_report; standalone: `medaug-diffmix-report --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.diffmix.report import REPORT

REPORT.run_snakemake(snakemake)
