"""Snakemake adapter of rule diffboost_report; standalone: `medaug-diffboost-report --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.diffboost.report import REPORT

REPORT.run_snakemake(snakemake)
