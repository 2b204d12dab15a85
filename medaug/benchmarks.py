"""Summary of Snakemake ``benchmark:`` files: wall time and peak memory per rule."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medaug import paths
from medaug.stage import Job, Spec, Stage  # imported by the Snakefile: pandas only on use

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = {"s": "wall_s", "max_rss": "peak_rss_mb", "cpu_time": "cpu_s"}


def read_benchmarks(root: str | Path) -> pd.DataFrame:
    """One row per job; ``benchmarks/<rule>/<wildcards>.tsv`` gives rule and job."""
    import pandas as pd

    root = Path(root)
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        if table.empty or not set(COLUMNS) <= set(table.columns):
            continue
        last = table.iloc[-1]  # repeated benchmarks append rows; the last run counts
        relative = path.relative_to(root)
        rows.append(
            {
                "rule": relative.parts[0],
                "job": str(relative.with_suffix(""))[len(relative.parts[0]) + 1 :],
                **{
                    new: float(last[old]) if pd.notna(last[old]) and last[old] != "-" else float("nan")
                    for old, new in COLUMNS.items()
                },
            }
        )
    return pd.DataFrame(rows, columns=["rule", "job", *COLUMNS.values()])


def summarize(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule: job count, total and longest wall time, highest peak RSS."""
    import pandas as pd

    summary = jobs.groupby("rule", sort=True).agg(
        jobs=("job", "size"),
        total_wall_s=("wall_s", "sum"),
        max_wall_s=("wall_s", "max"),
        peak_rss_mb=("peak_rss_mb", "max"),
    )
    total = pd.DataFrame(
        {
            "jobs": [int(summary.jobs.sum())],
            "total_wall_s": [summary.total_wall_s.sum()],
            "max_wall_s": [summary.max_wall_s.max()],
            "peak_rss_mb": [summary.peak_rss_mb.max()],
        },
        index=pd.Index(["all rules"], name="rule"),
    )
    return pd.concat([summary, total]).round(2).reset_index()


def write_summary(benchmark_root: str | Path, jobs_tsv: str | Path, summary_tsv: str | Path) -> pd.DataFrame:
    jobs = read_benchmarks(benchmark_root)
    jobs.round(3).to_csv(jobs_tsv, sep="\t", index=False)
    summary = summarize(jobs)
    summary.to_csv(summary_tsv, sep="\t", index=False)
    return summary


def _summarize(job: Job) -> None:
    import logging

    summary = write_summary(job.settings["benchmark_root"], job.outputs["jobs"], job.outputs["summary"])
    logging.getLogger("medaug").info("cost per rule:\n%s", summary.to_string(index=False))


SUMMARY = Stage(
    Spec(
        name="summarize_benchmarks",
        description="Collect every rule's benchmark file into per-job and per-rule cost tables.",
        inputs=lambda config, w: {},
        outputs=lambda config, w: {"jobs": paths.BENCHMARK_JOBS, "summary": paths.BENCHMARK_SUMMARY},
        settings=lambda config, w: {"benchmark_root": paths.BENCHMARKS},
    ),
    _summarize,
)
summarize_entry = SUMMARY.entry
