"""Paper-style tables from per-case metrics: per-run aggregation, paired statistics, CSV,
Markdown and HTML.

Aggregation: per-case metrics are averaged per run (the keys in :class:`Layout`); a table
cell is the mean ± standard deviation over runs, and beside it the official pooled std
(the square root of the mean over runs of the per-run variance over cases, as the
official summary pools its folds). The paired test compares each variant with its
baseline by a Wilcoxon signed-rank test on the primary metric, each case paired once: a
case's values are first averaged over the seeds it was scored with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from medaug.report.captions import marked


@dataclass(frozen=True)
class Layout:
    """What a paper's tables are made of."""

    metrics: dict[str, tuple[str, float]]  # per-case metric column -> (header, scale for display)
    counts: dict[str, str]  # per-case 0/1 column -> header of its count over every scored case
    run_keys: tuple[str, ...]  # columns that name one run (its cases are averaged)
    row_keys: tuple[str, ...]  # columns that name a table row, before the table's factor
    factors: tuple[str, ...]  # run labels a table may be laid out by
    tables: dict[str, tuple[str, str]]  # table name -> (title, factor of its rows)
    baseline: Callable[[str, str], str]  # (arm, variant) -> the variant it is tested against
    pair_keys: tuple[str, ...]  # columns that pair a variant's case with the baseline's (no seed)

    @property
    def primary(self) -> str:
        return next(iter(self.metrics))

    @property
    def p_column(self) -> str:
        return f"p_{self.primary}_vs_baseline"


def collect(metric_files: list[str | Path], labels: list[dict]) -> pd.DataFrame:
    """Concatenate per-case metric tables, adding each run's labels (list labels are joined by ';')."""
    frames = []
    for path, label in zip(metric_files, labels, strict=True):
        frame = pd.read_csv(path, sep="\t", dtype={"case_id": str})
        for key, value in label.items():
            frame[key] = ";".join(value) if isinstance(value, list) else value
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _run_columns(metrics: pd.DataFrame, layout: Layout) -> list[str]:
    extra = [c for c in (*layout.row_keys, *layout.factors, "tables") if c in metrics and c not in layout.run_keys]
    return list(layout.run_keys) + extra


def per_run(metrics: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """One row per run: the mean over its cases of each metric, and the per-case counts summed."""
    groups = metrics.groupby(_run_columns(metrics, layout), dropna=False)
    runs = groups[list(layout.metrics)].mean()
    for column in layout.counts:
        runs[column] = groups[column].sum()
    for metric in layout.metrics:
        runs[f"{metric}_variance"] = groups[metric].var(ddof=0)
    return runs.reset_index()


def paired_p_value(metrics: pd.DataFrame, variant: str, baseline: str, layout: Layout) -> float:
    """Wilcoxon signed-rank p-value of the primary metric, variant vs baseline, each case
    paired once (its values averaged over seeds first); NaN if < 2 pairs or all
    differences are zero."""
    from scipy.stats import wilcoxon

    keys = list(layout.pair_keys)
    a = metrics[metrics.variant == variant].groupby(keys)[layout.primary].mean()
    b = metrics[metrics.variant == baseline].groupby(keys)[layout.primary].mean()
    paired = pd.concat([a, b], axis=1, join="inner").dropna()
    differences = paired.iloc[:, 0] - paired.iloc[:, 1]
    if len(paired) < 2 or np.allclose(differences, 0):
        return float("nan")
    return float(wilcoxon(paired.iloc[:, 0], paired.iloc[:, 1]).pvalue)


def _same_row(metrics: pd.DataFrame, row, layout: Layout) -> pd.DataFrame:
    """The cases of every variant that share ``row``'s keys other than its variant: what its
    paired test compares."""
    keep = np.ones(len(metrics), dtype=bool)
    for key in layout.row_keys:
        if key != "variant":
            keep &= (metrics[key] == getattr(row, key)).to_numpy()
    return metrics[keep]


def table(metrics: pd.DataFrame, name: str, layout: Layout) -> pd.DataFrame:
    """One table: a row per (row keys, variant) in table ``name``; per metric the mean and
    std over runs and the pooled std; the per-case counts; the run count; the paired p-value
    of the primary metric against the row's baseline."""
    runs = per_run(metrics, layout)
    runs = runs[runs.tables.str.split(";").apply(lambda tables: name in tables)]
    if runs.empty:
        return pd.DataFrame()
    group = list(dict.fromkeys([*layout.row_keys, layout.tables[name][1]]))
    grouped = runs.groupby(group, dropna=False)
    summary = grouped[list(layout.metrics)].agg(["mean", "std"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    for metric in layout.metrics:
        summary[f"{metric}_pooled_std"] = np.sqrt(grouped[f"{metric}_variance"].mean())
    for column in layout.counts:
        summary[column] = grouped[column].sum().astype(int)
    summary["runs"] = grouped.size()
    summary = summary.reset_index()
    summary[layout.p_column] = [
        paired_p_value(
            _same_row(metrics, r, layout),
            r.variant,
            layout.baseline(r.arm, r.variant),
            layout,
        )
        if r.variant != layout.baseline(r.arm, r.variant)
        else float("nan")
        for r in summary.itertuples()
    ]
    return summary.sort_values(group).reset_index(drop=True)


def formatted(summary: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """The table as text cells: row keys and factor, 'mean ± std' per metric, the pooled std
    of the primary metric, the counts, the run count and the p-value."""
    derived = {"runs", layout.p_column, *layout.counts}
    factor_columns = [
        c for c in summary.columns if not any(c.startswith(f"{m}_") for m in layout.metrics) and c not in derived
    ]
    cells = summary[factor_columns].astype(str)
    for metric, (header, scale) in layout.metrics.items():
        means, stds = summary[f"{metric}_mean"] * scale, summary[f"{metric}_std"] * scale
        cells[header] = [
            f"{mean:.2f} ± {std:.2f}" if not np.isnan(std) else f"{mean:.2f}"
            for mean, std in zip(means, stds, strict=True)
        ]
    header, scale = layout.metrics[layout.primary]
    cells[f"{header} pooled std"] = [f"{v * scale:.2f}" for v in summary[f"{layout.primary}_pooled_std"]]
    for column, header in layout.counts.items():
        cells[header] = summary[column].astype(str)
    cells["runs"] = summary["runs"].astype(str)
    cells[f"p ({header_word(layout)})"] = ["" if np.isnan(p) else f"{p:.3g}" for p in summary[layout.p_column]]
    return cells


def header_word(layout: Layout) -> str:
    """The primary metric's header without its unit (``Dice %`` -> ``Dice``)."""
    return layout.metrics[layout.primary][0].split()[0]


def to_markdown(summary: pd.DataFrame, title: str, layout: Layout) -> str:
    """Markdown table with 'mean ± std' cells."""
    if summary.empty:
        return f"### {marked(title)}\n\n(no runs)\n"
    cells = formatted(summary, layout)
    lines = [f"### {marked(title)}", "", "| " + " | ".join(cells.columns) + " |", "|" + "---|" * len(cells.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def html_page(title: str, body: str) -> str:
    """A standalone HTML page around a table's HTML, for the Snakemake report; its title
    carries the stand-in mark where the job's data are stand-ins."""
    title = marked(title)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title>"
        # Headers wrap and cells stay on one line, so that the widest tables (a column per
        # metric and count) fit the report's frame in a 1,400 px window.
        "<style>body{font-family:sans-serif;font-size:12px;margin:4px}table{border-collapse:collapse}"
        "th{white-space:normal;vertical-align:bottom}td{white-space:nowrap}"
        "th,td{padding:2px 5px;border-bottom:1px solid #ddd;text-align:left}</style>"
        f"</head><body><h3>{escape(title)}</h3>\n{body}\n</body></html>\n"
    )


def to_html(summary: pd.DataFrame, title: str, layout: Layout) -> str:
    """A standalone HTML page of the table, for the Snakemake report."""
    body = "<p>(no runs)</p>" if summary.empty else formatted(summary, layout).to_html(index=False, border=0)
    return html_page(title, body)


def write_tables(metrics: pd.DataFrame, out_dir: str | Path, layout: Layout) -> dict[str, int]:
    """Every table as CSV (numeric), Markdown and HTML (for the report); returns rows per table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, (title, _) in layout.tables.items():
        summary = table(metrics, name, layout)
        summary.to_csv(out_dir / f"{name}.csv", index=False, float_format="%.6g")
        (out_dir / f"{name}.md").write_text(to_markdown(summary, title, layout))
        (out_dir / f"{name}.html").write_text(to_html(summary, title, layout))
        rows[name] = len(summary)
    return rows
