"""DiffBoost's tables and figures from the per-case metrics of every downstream run.

Aggregation: per-case metrics are averaged per (fold, seed) run, and a table cell is the
mean ± standard deviation over runs (the official summary is mean ± pooled std over 3
folds). The paired test compares each variant with its baseline by a Wilcoxon
signed-rank test on per-case Dice, pairing the same test case, fold and seed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

# Per-case metric columns, as medaug.evaluation.case_metrics names them.
METRICS = ("dice", "precision", "recall", "hd95")

RUN_KEYS = ["dataset", "arm", "variant", "protocol", "fold", "seed"]
TABLE_FACTORS = {
    "main": "variant",
    "ratio": "ratio",
    "patch": "patch_size",
    "alpha": "alpha",
    "architecture": "architecture",
    "augmentation": "augmentation",
}


def collect(metric_files: list[str | Path], labels: list[dict]) -> pd.DataFrame:
    """Concatenate per-case metric tables, adding each run's labels (dataset, arm, variant,
    ratio, patch_size, alpha, architecture, augmentation, tables)."""
    frames = []
    for path, label in zip(metric_files, labels, strict=True):
        frame = pd.read_csv(path, sep="\t", dtype={"case_id": str})
        for key, value in label.items():
            frame[key] = ";".join(value) if isinstance(value, list) else value
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def per_run(metrics: pd.DataFrame) -> pd.DataFrame:
    extra = [c for c in ("ratio", "patch_size", "alpha", "architecture", "augmentation", "tables") if c in metrics]
    return metrics.groupby(RUN_KEYS + extra, dropna=False)[list(METRICS)].mean().reset_index()


def paired_p_value(metrics: pd.DataFrame, variant: str, baseline: str) -> float:
    """Wilcoxon signed-rank p-value of per-case Dice, variant vs baseline (NaN if < 2 pairs
    or all differences are zero)."""
    from scipy.stats import wilcoxon

    keys = ["dataset", "protocol", "fold", "seed", "case_id"]
    a = metrics[metrics.variant == variant].set_index(keys).dice
    b = metrics[metrics.variant == baseline].set_index(keys).dice
    paired = pd.concat([a, b], axis=1, join="inner").dropna()
    differences = paired.iloc[:, 0] - paired.iloc[:, 1]
    if len(paired) < 2 or np.allclose(differences, 0):
        return float("nan")
    return float(wilcoxon(paired.iloc[:, 0], paired.iloc[:, 1]).pvalue)


def table(metrics: pd.DataFrame, name: str) -> pd.DataFrame:
    """One paper-style table: a row per (dataset, arm, protocol, variant) in table ``name``,
    mean and std over runs of each metric, the run count and the paired p-value of Dice
    against the arm's baseline."""
    runs = per_run(metrics)
    runs = runs[runs.tables.str.split(";").apply(lambda tables: name in tables)]
    if runs.empty:
        return pd.DataFrame()
    group = ["dataset", "arm", "protocol", "variant", TABLE_FACTORS[name]]
    group = list(dict.fromkeys(group))
    summary = runs.groupby(group, dropna=False)[list(METRICS)].agg(["mean", "std"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    summary["runs"] = runs.groupby(group, dropna=False).size()
    summary = summary.reset_index()
    baselines = {"paper": "baseline", "nnunet": "nnunet_r0"}
    summary["p_dice_vs_baseline"] = [
        paired_p_value(
            metrics[(metrics.dataset == r.dataset) & (metrics.arm == r.arm) & (metrics.protocol == r.protocol)],
            r.variant,
            baselines.get(r.arm, "baseline"),
        )
        if r.variant != baselines.get(r.arm, "baseline")
        else float("nan")
        for r in summary.itertuples()
    ]
    return summary.sort_values(group).reset_index(drop=True)


def formatted(summary: pd.DataFrame) -> pd.DataFrame:
    """The table as text cells: factors, 'mean ± std' per metric (Dice, precision and recall
    in %, HD95 in mm), the run count and the paired p-value."""
    factor_columns = [
        c
        for c in summary.columns
        if not any(c.startswith(m) for m in METRICS) and c not in ("runs", "p_dice_vs_baseline")
    ]
    cells = summary[factor_columns].astype(str)
    for metric, header, scale in (
        ("dice", "Dice %", 100),
        ("precision", "Precision %", 100),
        ("recall", "Recall %", 100),
        ("hd95", "HD95", 1),
    ):
        means, stds = summary[f"{metric}_mean"] * scale, summary[f"{metric}_std"] * scale
        cells[header] = [
            f"{mean:.2f} ± {std:.2f}" if not np.isnan(std) else f"{mean:.2f}"
            for mean, std in zip(means, stds, strict=True)
        ]
    cells["runs"] = summary["runs"].astype(str)
    cells["p (Dice)"] = ["" if np.isnan(p) else f"{p:.3g}" for p in summary["p_dice_vs_baseline"]]
    return cells


def to_markdown(summary: pd.DataFrame, title: str) -> str:
    """Markdown table with 'mean ± std' cells."""
    if summary.empty:
        return f"### {title}\n\n(no runs)\n"
    cells = formatted(summary)
    lines = [f"### {title}", "", "| " + " | ".join(cells.columns) + " |", "|" + "---|" * len(cells.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def to_html(summary: pd.DataFrame, title: str) -> str:
    """A standalone HTML page of the table, for the Snakemake report."""
    from html import escape

    body = "<p>(no runs)</p>" if summary.empty else formatted(summary).to_html(index=False, border=0)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title>"
        "<style>body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
        "th,td{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left}</style>"
        f"</head><body><h3>{escape(title)}</h3>\n{body}\n</body></html>\n"
    )


TITLES = {
    "main": "Baseline vs DiffBoost (paper Table: main comparison)",
    "ratio": "Ablation: synthetic images per real slice",
    "patch": "Ablation: merging-mask patch size r",
    "alpha": "Ablation: merging-mask alpha",
    "architecture": "Ablation: segmentation architecture",
    "augmentation": "Ablation: augmentation arms",
}


def write_tables(metrics: pd.DataFrame, out_dir: str | Path) -> dict[str, int]:
    """Every table as CSV (numeric), Markdown and HTML (for the report); returns rows per table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, title in TITLES.items():
        summary = table(metrics, name)
        summary.to_csv(out_dir / f"{name}.csv", index=False, float_format="%.6g")
        (out_dir / f"{name}.md").write_text(to_markdown(summary, title))
        (out_dir / f"{name}.html").write_text(to_html(summary, title))
        rows[name] = len(summary)
    return rows


def dice_vs_ratio_figure(metrics: pd.DataFrame, png: str | Path, svg: str | Path) -> None:
    """Dice against synthetic ratio (0 = real only) with bootstrap 95% CIs over runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    runs = per_run(metrics)
    runs = runs[runs.tables.str.split(";").apply(lambda t: "ratio" in t or "main" in t)]
    runs = runs[runs.augmentation.isin(["none", "DiffBoost"]) | (runs.arm == "nnunet")]
    sns.set_theme(context="paper", style="whitegrid")
    grid = sns.relplot(
        data=runs,
        x="ratio",
        y="dice",
        hue="dataset",
        style="arm",
        col="protocol",
        kind="line",
        marker="o",
        errorbar=("ci", 95),
        n_boot=1000,
        seed=0,
        height=3,
        aspect=1.2,
    )
    grid.set_axis_labels("synthetic images per real slice (0 = real only)", "test Dice")
    grid.figure.suptitle("DiffBoost: Dice vs synthetic ratio (mean, 95% CI over folds x seeds)", y=1.04)
    grid.savefig(png, dpi=150, bbox_inches="tight")
    grid.savefig(svg, bbox_inches="tight")
    plt.close(grid.figure)


def samples_figure(panels: list[dict], png: str | Path, columns: int) -> None:
    """A grid with one row per example: real slice, condition map, synthetic images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(panels), columns, figsize=(1.6 * columns, 1.6 * len(panels)), squeeze=False)
    for row, panel in enumerate(panels):
        images = [panel["real"], panel["condition"], *panel["synthetic"]][:columns]
        titles = ["real", "condition", *[f"synthetic {k + 1}" for k in range(len(panel["synthetic"]))]]
        for col, ax in enumerate(axes[row]):
            ax.axis("off")
            if col < len(images):
                ax.imshow(images[col], cmap="gray", vmin=-1 if col != 1 else 0, vmax=1)
                if row == 0:
                    ax.set_title(titles[col], fontsize=7)
        axes[row][0].text(
            -0.1, 0.5, panel["label"], transform=axes[row][0].transAxes, ha="right", va="center", fontsize=6
        )
    figure.tight_layout()
    figure.savefig(png, dpi=150)
    plt.close(figure)


def sample_panels(
    dataset: str,
    prepared_dir: str | Path,
    conditions_dir: str | Path,
    synthetic_dir: str | Path,
    ratio: int,
    n: int = 3,
) -> list[dict]:
    """Up to ``n`` real/condition/synthetic examples of one fold, picked evenly."""
    from medaug.slices import load_slices, load_synthetic_pool

    pool = load_synthetic_pool(synthetic_dir, ratio)
    slices = pd.read_csv(Path(prepared_dir) / "slices.tsv", sep="\t", dtype={"case_id": str})
    rows = slices[slices.slice_id.isin(pool)].reset_index(drop=True)
    picks = rows.iloc[np.linspace(0, len(rows) - 1, min(n, len(rows))).round().astype(int)].reset_index(drop=True)
    images, conditions = load_slices(prepared_dir, conditions_dir, picks)
    return [
        {
            "label": f"{dataset}\n{r.slice_id}",
            "real": images[i],
            "condition": conditions[i],
            "synthetic": list(pool[r.slice_id]),
        }
        for i, r in enumerate(picks.itertuples())
    ]
