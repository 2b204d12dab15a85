"""Snakemake adapter of rule dcube_report; standalone: `medaug-dcube-report --help`."""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.dcube.report import REPORT

REPORT.run_snakemake(snakemake)
