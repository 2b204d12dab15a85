"""Paper-style tables from per-case metrics: per-run aggregation, paired statistics, CSV,
Markdown and HTML.

Aggregation: per-case metrics are averaged per run (the keys in :class:`Layout`), and a
table cell is the mean ± standard deviation over runs. The paired test compares each
variant with its arm's baseline by a Wilcoxon signed-rank test on the per-case primary
metric, pairing the same case of the same run keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Layout:
    """What a paper's tables are made of."""

    metrics: dict[str, tuple[str, float]]  # per-case metric column -> (header, scale for display)
    run_keys: tuple[str, ...]  # columns that name one run (its cases are averaged)
    factors: tuple[str, ...]  # run labels a table may be laid out by
    tables: dict[str, tuple[str, str]]  # table name -> (title, factor of its rows)
    baselines: dict[str, str]  # arm -> the variant the paired test compares against
    pair_keys: tuple[str, ...]  # columns that pair a variant's case with the baseline's

    @property
    def primary(self) -> str:
        return next(iter(self.metrics))


def collect(metric_files: list[str | Path], labels: list[dict]) -> pd.DataFrame:
    """Concatenate per-case metric tables, adding each run's labels (list labels are joined by ';')."""
    frames = []
    for path, label in zip(metric_files, labels, strict=True):
        frame = pd.read_csv(path, sep="\t", dtype={"case_id": str})
        for key, value in label.items():
            frame[key] = ";".join(value) if isinstance(value, list) else value
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def per_run(metrics: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    extra = [c for c in (*layout.factors, "tables") if c in metrics]
    return metrics.groupby(list(layout.run_keys) + extra, dropna=False)[list(layout.metrics)].mean().reset_index()


def paired_p_value(metrics: pd.DataFrame, variant: str, baseline: str, layout: Layout) -> float:
    """Wilcoxon signed-rank p-value of the per-case primary metric, variant vs baseline
    (NaN if < 2 pairs or all differences are zero)."""
    from scipy.stats import wilcoxon

    keys = list(layout.pair_keys)
    a = metrics[metrics.variant == variant].set_index(keys)[layout.primary]
    b = metrics[metrics.variant == baseline].set_index(keys)[layout.primary]
    paired = pd.concat([a, b], axis=1, join="inner").dropna()
    differences = paired.iloc[:, 0] - paired.iloc[:, 1]
    if len(paired) < 2 or np.allclose(differences, 0):
        return float("nan")
    return float(wilcoxon(paired.iloc[:, 0], paired.iloc[:, 1]).pvalue)


def table(metrics: pd.DataFrame, name: str, layout: Layout) -> pd.DataFrame:
    """One table: a row per (dataset, arm, protocol, variant) in table ``name``, mean and
    std over runs of each metric, the run count and the paired p-value of the primary
    metric against the arm's baseline."""
    runs = per_run(metrics, layout)
    runs = runs[runs.tables.str.split(";").apply(lambda tables: name in tables)]
    if runs.empty:
        return pd.DataFrame()
    group = list(dict.fromkeys(["dataset", "arm", "protocol", "variant", layout.tables[name][1]]))
    summary = runs.groupby(group, dropna=False)[list(layout.metrics)].agg(["mean", "std"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    summary["runs"] = runs.groupby(group, dropna=False).size()
    summary = summary.reset_index()
    p_column = f"p_{layout.primary}_vs_baseline"
    summary[p_column] = [
        paired_p_value(
            metrics[(metrics.dataset == r.dataset) & (metrics.arm == r.arm) & (metrics.protocol == r.protocol)],
            r.variant,
            layout.baselines[r.arm],
            layout,
        )
        if r.variant != layout.baselines[r.arm]
        else float("nan")
        for r in summary.itertuples()
    ]
    return summary.sort_values(group).reset_index(drop=True)


def formatted(summary: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """The table as text cells: factors, 'mean ± std' per metric, the run count and the p-value."""
    p_column = f"p_{layout.primary}_vs_baseline"
    factor_columns = [
        c for c in summary.columns if not any(c.startswith(m) for m in layout.metrics) and c not in ("runs", p_column)
    ]
    cells = summary[factor_columns].astype(str)
    for metric, (header, scale) in layout.metrics.items():
        means, stds = summary[f"{metric}_mean"] * scale, summary[f"{metric}_std"] * scale
        cells[header] = [
            f"{mean:.2f} ± {std:.2f}" if not np.isnan(std) else f"{mean:.2f}"
            for mean, std in zip(means, stds, strict=True)
        ]
    cells["runs"] = summary["runs"].astype(str)
    cells[f"p ({layout.metrics[layout.primary][0].split()[0]})"] = [
        "" if np.isnan(p) else f"{p:.3g}" for p in summary[p_column]
    ]
    return cells


def to_markdown(summary: pd.DataFrame, title: str, layout: Layout) -> str:
    """Markdown table with 'mean ± std' cells."""
    if summary.empty:
        return f"### {title}\n\n(no runs)\n"
    cells = formatted(summary, layout)
    lines = [f"### {title}", "", "| " + " | ".join(cells.columns) + " |", "|" + "---|" * len(cells.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def to_html(summary: pd.DataFrame, title: str, layout: Layout) -> str:
    """A standalone HTML page of the table, for the Snakemake report."""
    body = "<p>(no runs)</p>" if summary.empty else formatted(summary, layout).to_html(index=False, border=0)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title>"
        "<style>body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
        "th,td{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left}</style>"
        f"</head><body><h3>{escape(title)}</h3>\n{body}\n</body></html>\n"
    )


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
