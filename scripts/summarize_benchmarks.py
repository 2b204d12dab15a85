"""Collect every rule's benchmark file into per-job and per-rule cost tables.

Standalone: python scripts/summarize_benchmarks.py benchmarks jobs.tsv summary.tsv
"""

import logging

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.benchmarks import write_summary
from medaug.logs import run_job


def main(benchmark_root, jobs_tsv, summary_tsv, log=None):
    def job():
        summary = write_summary(benchmark_root, jobs_tsv, summary_tsv)
        logging.getLogger("medaug").info("cost per rule:\n%s", summary.to_string(index=False))

    run_job(job, log)


if "snakemake" in globals():
    main(snakemake.params.benchmark_root, snakemake.output.jobs, snakemake.output.summary, snakemake.log[0])
elif __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark_root")
    parser.add_argument("jobs_tsv")
    parser.add_argument("summary_tsv")
    args = parser.parse_args()
    main(args.benchmark_root, args.jobs_tsv, args.summary_tsv)
