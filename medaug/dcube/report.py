"""D-Cube's metrics, tables and figures from every classifier run's test predictions.

Per run and protocol: accuracy, macro precision / recall / F1 (sklearn, ``zero_division=1``
as the official code), macro one-vs-rest AUC and each class's recall. A table cell is the
mean ± std over seeds. The paired test compares a row with the baseline (the plain CNN
without synthetic images, same dataset, scenario and protocol) by a Wilcoxon signed-rank
test on per-image correctness, each test image paired once (its correctness averaged over
seeds first). Each table is written as CSV (numeric), Markdown and HTML (the page the
Snakemake report shows); the line figures draw the per-seed runs of the clean protocol.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from medaug.dcube import data, params, stages
from medaug.io import read_json
from medaug.report.captions import marked, stand_in_titles
from medaug.report.figures import pyplot, save
from medaug.report.tables import html_page
from medaug.stage import Job, Stage

log = logging.getLogger(__name__)

METRICS = {
    "accuracy": "Accuracy %",
    "macro_precision": "Precision %",
    "macro_recall": "Recall %",
    "macro_f1": "F1 %",
    "auc": "AUC %",
}
# The imbalance figure's curves: one per model and synthetic count.
SWEEP_CURVE = "model, synthetic images"
# Table and figure headers: the metrics and the sweeps' minority-class recall.
HEADERS = {**METRICS, "minority_recall": "Minority recall %"}
RUN_KEYS = ["dataset", "scenario", "protocol", "model", "synthetic_count"]


def run_metrics(predictions: pd.DataFrame, classes: list[str]) -> dict:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

    y, predicted = predictions.label_index.to_numpy(), predictions.predicted.to_numpy()
    labels = list(range(len(classes)))
    row = {
        "accuracy": accuracy_score(y, predicted),
        "macro_precision": precision_score(y, predicted, labels=labels, average="macro", zero_division=1),
        "macro_recall": recall_score(y, predicted, labels=labels, average="macro", zero_division=1),
        "macro_f1": f1_score(y, predicted, labels=labels, average="macro", zero_division=1),
    }
    probabilities = predictions[[f"p{c}" for c in labels]].to_numpy()
    present = np.unique(y)
    if len(present) < 2:
        row["auc"] = np.nan
    elif len(labels) == 2:
        row["auc"] = roc_auc_score(y, probabilities[:, 1])
    else:
        probabilities = probabilities / probabilities.sum(1, keepdims=True)
        row["auc"] = roc_auc_score(y, probabilities, multi_class="ovr", average="macro", labels=labels)
    recalls = recall_score(y, predicted, labels=labels, average=None, zero_division=1)
    row |= {f"recall_{name}": float(value) for name, value in zip(classes, recalls, strict=True)}
    return row


def collect(prediction_files: list[str], runs: list[dict], classes: dict[str, list[str]]):
    """(per-run metrics, per-image correctness) over every run and protocol."""
    rows, cases = [], []
    for path, run in zip(prediction_files, runs, strict=True):
        frame = pd.read_csv(path, sep="\t", dtype={"case_id": str})
        for protocol, group in frame.groupby("protocol", sort=False):
            labels = {**run, "protocol": protocol}
            rows.append({**labels, **run_metrics(group, classes[run["dataset"]])})
            correct = group[["case_id"]].assign(correct=(group.label_index == group.predicted).astype(float))
            cases.append(correct.assign(**labels))
    return pd.DataFrame(rows), pd.concat(cases, ignore_index=True)


def paired_p(cases: pd.DataFrame, row: dict) -> float:
    from scipy.stats import wilcoxon

    keys = {k: row[k] for k in ("dataset", "scenario", "protocol")}
    mine = cases.query(" and ".join(f"{k} == @row[{k!r}]" for k in RUN_KEYS))
    base = cases[
        (cases.dataset == keys["dataset"])
        & (cases.scenario == keys["scenario"])
        & (cases.protocol == keys["protocol"])
        & (cases.model == params.BASELINE)
        & (cases["synthetic_count"] == 0)
    ]
    if row["model"] == params.BASELINE and row["synthetic_count"] == 0:
        return float("nan")  # the baseline itself: nothing to test
    a = mine.groupby("case_id").correct.mean()
    b = base.groupby("case_id").correct.mean().reindex(a.index)
    differences = (a - b).dropna()
    if differences.empty:
        return float("nan")  # no baseline run to pair with
    if not differences.any():
        return 1.0  # the same answer on every image
    return float(wilcoxon(differences).pvalue)


def summarize(metrics: pd.DataFrame, cases: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds of ``rows`` (a subset of ``metrics``), with the paired p-value."""
    value_columns = [c for c in rows if c in METRICS or c.startswith("recall_")]
    grouped = rows.groupby(RUN_KEYS, sort=False)
    summary = grouped[value_columns].agg(["mean", "std"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    summary["seeds"] = grouped.size()
    summary = summary.reset_index()
    summary["p_accuracy_vs_baseline"] = [paired_p(cases, row) for row in summary.to_dict("records")]
    return summary


def formatted(summary: pd.DataFrame, extra: list[str] = ()) -> pd.DataFrame:
    """The table as text cells, as the Markdown and HTML pages show it: the run labels, a
    'mean ± std' cell per metric (in %; '–' where undefined), the seed count and the p-value."""
    metrics = [m for m in METRICS if f"{m}_mean" in summary] + list(extra)
    rows = []
    for row in summary.to_dict("records"):
        cells = {
            "dataset": row["dataset"],
            "scenario": row["scenario"],
            "protocol": row["protocol"],
            "model": row["model"],
            "synthetic": str(row["synthetic_count"]),
        }
        for metric in metrics:
            mean, std = 100 * row[f"{metric}_mean"], 100 * row[f"{metric}_std"]
            # One seed has no std: shown as ± 0.0, the seeds column says why.
            cells[HEADERS.get(metric, metric)] = (
                "–" if np.isnan(mean) else f"{mean:.1f} ± {0 if np.isnan(std) else std:.1f}"
            )
        p_value = row["p_accuracy_vs_baseline"]
        cells |= {"seeds": str(row["seeds"]), "p vs baseline": "–" if np.isnan(p_value) else f"{p_value:.3g}"}
        rows.append(cells)
    columns = ["dataset", "scenario", "protocol", "model", "synthetic"]
    columns += [HEADERS.get(m, m) for m in metrics] + ["seeds", "p vs baseline"]
    return pd.DataFrame(rows, columns=columns)


def markdown_page(cells: pd.DataFrame, title: str) -> str:
    lines = [f"### {marked(title)}", "", "| " + " | ".join(cells.columns) + " |", "|" + "---|" * len(cells.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def html_table_page(cells: pd.DataFrame, title: str) -> str:
    """The table as a standalone HTML page, the one the Snakemake report shows."""
    body = "<p>(no runs)</p>" if cells.empty else cells.to_html(index=False, border=0)
    return html_page(title, body)


def _write_pages(cells: pd.DataFrame, folder: Path, name: str, title: str) -> None:
    (folder / f"{name}.md").write_text(markdown_page(cells, title))
    (folder / f"{name}.html").write_text(html_table_page(cells, title))


def _write(summary: pd.DataFrame, folder: Path, name: str, title: str, extra: list[str] = ()) -> None:
    """The table as CSV (numeric), Markdown and HTML (the report's page)."""
    summary.to_csv(folder / f"{name}.csv", index=False, float_format="%.6g")
    _write_pages(formatted(summary, extra), folder, name, title)


def _line_figure(
    runs: pd.DataFrame, x: str, metrics: list[str], xlabel: str, path: Path, title: str, hue: str = "model"
):
    """Per dataset (columns) and metric (rows), one line per ``hue`` against ``x`` from the
    per-seed ``runs``: the mean over seeds, with ± std bars only where every point has
    several seeds (the title says which). Returns the figure (saved and closed)."""
    plt = pyplot()
    import seaborn as sns

    long = runs.melt(id_vars=["dataset", hue, x, "seed"], value_vars=metrics, var_name="metric", value_name="value")
    long["metric"] = long.metric.map(lambda m: HEADERS.get(m, m))
    long["value"] = 100 * long.value.astype(float)
    long = long.dropna(subset=["value"])
    if long.empty:
        figure = plt.figure(figsize=(6, 2))
        figure.text(0.5, 0.5, f"{title}: no runs", ha="center", va="center")
        save(figure, path, path.with_suffix(".svg"))
        return figure
    seeds = long.groupby(["dataset", "metric", hue, x]).seed.nunique()
    several = bool((seeds >= 2).all())
    if several:
        counts = str(seeds.min()) if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()}"
        spread = f"mean ± std over {counts} seeds"
    else:
        # A std over one seed is zero: no bars rather than bars that claim no spread.
        spread = "one seed" if seeds.max() == 1 else "no error bars: some points have one seed"
    grid = sns.relplot(
        data=long,
        x=x,
        y="value",
        hue=hue,
        col="dataset",
        row="metric",
        kind="line",
        marker="o",
        errorbar="sd" if several else None,
        err_style="bars",
        err_kws={"capsize": 3},
        height=2.8,
        aspect=1.3,
        facet_kws={"sharey": True, "sharex": True},
    )
    grid.set_titles("{col_name}: {row_name}")
    grid.set_axis_labels(xlabel, "%")
    grid.set(ylim=(0, 100))
    # Above the top row's panel titles (the saved figure's tight box takes it in).
    grid.figure.suptitle(f"{title} ({spread})", y=1.03)
    save(grid.figure, path, path.with_suffix(".svg"))
    return grid.figure


def _sample_figure(settings: dict, inputs: dict, path: Path):
    """Per dataset and class, a few real training images, then synthetic ones of that class;
    returns the figure (saved and closed)."""
    plt = pyplot()
    real_count, synthetic_count = 3, 6
    columns = real_count + 1 + synthetic_count  # an empty column between real and synthetic
    panels = []
    sources = zip(settings["quality"], inputs["synthetic"], inputs["prepared"], inputs["splits"], strict=True)
    for job, folder, prepared, splits in sources:
        synthetic = data.read_synthetic(folder)
        real = data.role_images(prepared, read_json(splits), "train")
        classes = sorted(
            set(zip(synthetic.labels, pd.read_csv(Path(folder) / data.SYNTHETIC_MANIFEST, sep="\t").label, strict=True))
        )
        panels.append((job["dataset"], real, synthetic, classes))
    rows = max(sum(len(classes) for *_, classes in panels), 1)
    # A fixed band in inches above the grid for the suptitle, so that it clears the first
    # row's titles whatever the number of rows.
    header, row_height = 0.45, 1.4
    height = header + row_height * rows
    figure, axes = plt.subplots(rows, columns, figsize=(1.2 * columns, height), squeeze=False)
    figure.subplots_adjust(top=1 - header / height, bottom=0.1 / height, hspace=0.25)
    for axis in axes.flat:
        axis.axis("off")
    row = 0
    for dataset, real, synthetic, classes in panels:
        for index, name in classes:
            shown = list(enumerate(real.images[real.labels == index][:real_count]))
            start = real_count + 1
            shown += [
                (start + k, image)
                for k, image in enumerate(synthetic.images[synthetic.labels == index][:synthetic_count])
            ]
            for column, image in shown:
                axes[row][column].imshow(image, cmap="gray", vmin=-1, vmax=1)
            # The row's dataset and class left of the row (a title that long would run into
            # the next column's), and short column titles over each row.
            axes[row][0].text(
                -0.08, 0.5, f"{dataset}\n{name}", transform=axes[row][0].transAxes, ha="right", va="center", fontsize=7
            )
            axes[row][0].set_title("real", fontsize=7, loc="left")
            axes[row][start].set_title("synthetic", fontsize=7, loc="left")
            row += 1
    figure.suptitle(
        "Real training images and synthetic images per class (step-1 U-ViT, full data)", y=1 - 0.1 / height, va="top"
    )
    save(figure, path)
    return figure


def report(job: Job) -> dict:
    """Every table and figure of the run; their titles say so where the data are stand-ins."""
    with stand_in_titles(job.settings["stand_in"]):
        return _tables_and_figures(job)


def _tables_and_figures(job: Job) -> dict:
    settings = job.settings
    runs = settings["runs"]
    classes = {}
    for run, path in zip(runs, job.inputs["predictions"], strict=True):
        if run["dataset"] not in classes:
            classes[run["dataset"]] = read_json(Path(path).parent / "training.json")["classes"]
    metrics, cases = collect(job.inputs["predictions"], runs, classes)
    Path(job.outputs["metrics"]).parent.mkdir(parents=True, exist_ok=True)
    metrics.to_csv(job.outputs["metrics"], sep="\t", index=False, float_format="%.6g")
    tables, figures = Path(job.outputs["tables"]), Path(job.outputs["figures"])
    tables.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    main_models = [params.BASELINE, params.DCUBE]

    full = metrics[(metrics.scenario == "full") & metrics.model.isin(main_models)]
    main = summarize(metrics, cases, full)
    _write(main, tables, "main", "Baseline CNN vs D-Cube, with and without synthetic images (full training data)")

    minority = {d: _minority_name(settings, classes[d], job.inputs, d) for d in classes}
    for kind, title in (
        ("minority", "Imbalance sweep: fraction of the minority class kept"),
        ("limited", "Limited-data sweep: fraction of training data kept"),
    ):
        rows = metrics[metrics.scenario.str.startswith(kind) | (metrics.scenario == "full")]
        rows = rows[rows.model.isin(main_models)]
        summary = summarize(metrics, cases, rows)
        summary["fraction"] = [data.parse_scenario(s)[1] for s in summary.scenario]
        summary["minority_class"] = summary.dataset.map(minority)
        summary["minority_recall_mean"] = [
            r[f"recall_{minority[r['dataset']]}_mean"] for r in summary.to_dict("records")
        ]
        summary["minority_recall_std"] = [r[f"recall_{minority[r['dataset']]}_std"] for r in summary.to_dict("records")]
        named = ", ".join(f"{dataset}: {name}" for dataset, name in minority.items())
        _write(
            summary,
            tables,
            "imbalance" if kind == "minority" else "limited",
            f"{title} (minority class: {named})",
            ["minority_recall"],
        )

    ablation_rows = metrics[
        (metrics.scenario == "full") & (metrics["synthetic_count"] == 0) & (metrics.model != params.BASELINE)
    ]
    _write(
        summarize(metrics, cases, ablation_rows),
        tables,
        "blocks",
        "Layer ablation: which U-ViT blocks give the hyper-features",
    )

    quality_rows = []
    for job_wildcards, path in zip(settings["quality"], job.inputs["quality"], strict=True):
        record = read_json(path)
        quality_rows += [
            {
                "dataset": job_wildcards["dataset"],
                "synthetic": job_wildcards["synthetic_count"],
                "feature_extractor": record["feature_extractor"],
                **row,
            }
            for row in record["per_class"]
        ]
    quality = pd.DataFrame(quality_rows)
    quality.to_csv(tables / "synthetic_quality.csv", index=False, float_format="%.6g")
    quality_table, quality_title = quality_cells(quality_rows)
    _write_pages(quality_table, tables, "synthetic_quality", quality_title)

    block_rows = []
    for generator, path in zip(settings["generators"], job.inputs["blocks"], strict=True):
        record = read_json(path)
        for row in record["statistics"]:
            block_rows.append(
                {**generator, **row, "chosen": row["block"] in record["chosen"], "source": record["source"]}
            )
    pd.DataFrame(block_rows).to_csv(tables / "block_selection.csv", index=False, float_format="%.6g")
    _write_pages(block_cells(block_rows), tables, "block_selection", BLOCK_SELECTION_TITLE)

    # The figures draw the per-seed runs of the clean protocol (the one without test-set selection).
    clean = metrics[(metrics.protocol == "clean") & metrics.model.isin(main_models)]
    _line_figure(
        clean[clean.scenario == "full"],
        "synthetic_count",
        ["accuracy", "macro_f1"],
        "synthetic images added",
        figures / "metric_vs_synthetic.png",
        "Clean protocol, full training data",
    )
    swept = clean[clean.scenario.str.startswith("minority") | (clean.scenario == "full")].copy()
    swept["fraction"] = [data.parse_scenario(scenario)[1] for scenario in swept.scenario]
    swept["minority_recall"] = [r[f"recall_{minority[r['dataset']]}"] for r in swept.to_dict("records")]
    swept[SWEEP_CURVE] = [f"{m}, {c}" for m, c in zip(swept.model, swept.synthetic_count, strict=True)]
    _line_figure(
        swept,
        "fraction",
        ["minority_recall", "macro_f1"],
        "fraction of the minority class kept",
        figures / "metric_vs_imbalance.png",
        "Clean protocol: imbalance sweep",
        hue=SWEEP_CURVE,
    )
    _sample_figure(settings, job.inputs, figures / "samples.png")
    log.info("main table:\n%s", (tables / "main.md").read_text())
    return {"runs": len(runs)}


def quality_cells(rows: list[dict]) -> tuple[pd.DataFrame, str]:
    """The synthetic-quality table as text cells, and its title. Its distances are FID/KID
    only on Inception-v3 features; on other features they are named feature FD/KD, and their
    scale is read against the real-vs-real columns (two halves of the class's real images)."""

    def number(value, scale: float = 1.0, digits: str = ".3g") -> str:
        return "–" if value is None or pd.isna(value) else f"{scale * value:{digits}}"

    inception = bool(rows) and all(row["feature_extractor"].startswith("Inception") for row in rows)
    fd, kd = ("FID", "KID") if inception else ("feature FD", "feature KD")
    cells = pd.DataFrame(
        [
            {
                "dataset": row["dataset"],
                "class": row["class"],
                "real images": str(row["real_images"]),
                "synthetic images": str(row["synthetic_images"]),
                f"{fd} synthetic vs real": number(row["fid"]),
                f"{fd} real vs real": number(row.get("fid_real_halves")),
                f"{kd} synthetic vs real": number(row["kid"]),
                f"{kd} real vs real": number(row.get("kid_real_halves")),
                "baseline accuracy on synthetic %": number(row["baseline_accuracy_on_synthetic"], 100, ".0f"),
                "feature extractor": row["feature_extractor"],
            }
            for row in rows
        ]
    )
    title = (
        f"Synthetic images per class: {fd}/{kd} against the real training images, beside the same distance "
        "between two halves of the real images, and the baseline classifier's accuracy on them"
    )
    return cells, title


BLOCK_SELECTION_TITLE = "Block selection: per U-ViT block, a one-way ANOVA of each hyper-feature across the classes"


def block_cells(rows: list[dict]) -> pd.DataFrame:
    """The block-selection table as text cells."""
    return pd.DataFrame(
        [
            {
                "dataset": row["dataset"],
                "scenario": row["scenario"],
                "block": str(row["block"]),
                "median p": f"{row['median_p']:.3g}",
                "features with p < 0.05 %": f"{100 * row['share_p_below_0.05']:.0f}",
                "chosen": "yes" if row["chosen"] else "",
                "chosen by": row["source"],
            }
            for row in rows
        ]
    )


def _minority_name(settings: dict, classes: list[str], inputs: dict, dataset: str) -> str:
    if settings["minority_class"] is not None:
        return settings["minority_class"]
    for run, path in zip(settings["runs"], inputs["predictions"], strict=True):
        if run["dataset"] == dataset and run["scenario"] == "full":
            counts = read_json(Path(path).parent / "training.json")["train_images"]
            return min(classes, key=lambda name: (counts[name], classes.index(name)))
    return classes[0]


REPORT = Stage(stages.REPORT, report)
report_entry = REPORT.entry
