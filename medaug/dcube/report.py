"""D-Cube's metrics, tables and figures from every classifier run's test predictions.

Per run and protocol: accuracy, macro precision / recall / F1 (sklearn, ``zero_division=1``
as the official code), macro one-vs-rest AUC and each class's recall. A table cell is the
mean ± std over seeds. The paired test compares a row with the baseline (the plain CNN
without synthetic images, same dataset, scenario and protocol) by a Wilcoxon signed-rank
test on per-image correctness, each test image paired once (its correctness averaged over
seeds first).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from medaug.dcube import data, params, stages
from medaug.io import read_json
from medaug.report.figures import pyplot, save
from medaug.stage import Job, Stage

log = logging.getLogger(__name__)

METRICS = {
    "accuracy": "Accuracy %",
    "macro_precision": "Precision %",
    "macro_recall": "Recall %",
    "macro_f1": "F1 %",
    "auc": "AUC %",
}
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
    a = mine.groupby("case_id").correct.mean()
    b = base.groupby("case_id").correct.mean().reindex(a.index)
    differences = (a - b).dropna()
    if differences.empty or not differences.any():
        return 1.0
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


def to_markdown(summary: pd.DataFrame, title: str, extra: list[str] = ()) -> str:
    metrics = [m for m in METRICS if f"{m}_mean" in summary] + list(extra)
    header = [
        "dataset",
        "scenario",
        "protocol",
        "model",
        "synthetic",
        *[METRICS.get(m, m) for m in metrics],
        "seeds",
        "p vs baseline",
    ]
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary.to_dict("records"):
        cells = [row["dataset"], row["scenario"], row["protocol"], row["model"], str(row["synthetic_count"])]
        for metric in metrics:
            mean, std = 100 * row[f"{metric}_mean"], 100 * row[f"{metric}_std"]
            cells.append("–" if np.isnan(mean) else f"{mean:.1f} ± {0 if np.isnan(std) else std:.1f}")
        cells += [str(row["seeds"]), f"{row['p_accuracy_vs_baseline']:.3g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write(summary: pd.DataFrame, folder: Path, name: str, title: str, extra: list[str] = ()) -> None:
    summary.to_csv(folder / f"{name}.csv", index=False, float_format="%.6g")
    (folder / f"{name}.md").write_text(to_markdown(summary, title, extra))


def _line_figure(summary: pd.DataFrame, x: str, metrics: list[str], xlabel: str, path: Path, title: str) -> None:
    plt = pyplot()
    datasets = list(dict.fromkeys(summary.dataset))
    figure, axes = plt.subplots(
        len(metrics), len(datasets), figsize=(4.5 * len(datasets), 3.2 * len(metrics)), squeeze=False
    )
    for column, dataset in enumerate(datasets):
        for line, metric in enumerate(metrics):
            axis = axes[line][column]
            rows = summary[summary.dataset == dataset]
            for (model, count), group in rows.groupby(["model", "synthetic_count"], sort=False):
                group = group.sort_values(x)
                axis.errorbar(
                    group[x], 100 * group[f"{metric}_mean"], yerr=100 * group[f"{metric}_std"].fillna(0),
                    marker="o", capsize=3, label=f"{model}, {count} synthetic" if x != "synthetic_count" else model,
                )  # fmt: skip
            axis.set_title(f"{dataset}: {METRICS.get(metric, metric)}")
            axis.set_xlabel(xlabel)
            axis.set_ylim(0, 100)
            axis.legend(fontsize=7)
    figure.suptitle(title)
    save(figure, path, path.with_suffix(".svg"))


def _sample_figure(settings: dict, inputs: dict, path: Path) -> None:
    """Per dataset and class, a few real training images, then synthetic ones of that class."""
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
    figure, axes = plt.subplots(rows, columns, figsize=(1.2 * columns, 1.4 * rows), squeeze=False)
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
            axes[row][0].set_title(f"{dataset}: {name}, real", fontsize=7, loc="left")
            axes[row][start].set_title("synthetic", fontsize=7, loc="left")
            row += 1
    figure.suptitle("Real training images and synthetic images per class (step-1 U-ViT, full data)")
    save(figure, path)


def report(job: Job) -> dict:
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
    sweeps = {}
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
        _write(summary, tables, "imbalance" if kind == "minority" else "limited", title, ["minority_recall"])
        sweeps[kind] = summary

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
    (tables / "synthetic_quality.md").write_text(quality_markdown(quality_rows))

    block_rows = []
    for generator, path in zip(settings["generators"], job.inputs["blocks"], strict=True):
        record = read_json(path)
        for row in record["statistics"]:
            block_rows.append(
                {**generator, **row, "chosen": row["block"] in record["chosen"], "source": record["source"]}
            )
    pd.DataFrame(block_rows).to_csv(tables / "block_selection.csv", index=False, float_format="%.6g")

    clean = main[main.protocol == "clean"]
    _line_figure(
        clean,
        "synthetic_count",
        ["accuracy", "macro_f1"],
        "synthetic images added",
        figures / "metric_vs_synthetic.png",
        "Clean protocol, full training data",
    )
    imbalance = sweeps["minority"]
    _line_figure(
        imbalance[imbalance.protocol == "clean"],
        "fraction",
        ["minority_recall", "macro_f1"],
        "fraction of the minority class kept",
        figures / "metric_vs_imbalance.png",
        "Clean protocol: imbalance sweep",
    )
    _sample_figure(settings, job.inputs, figures / "samples.png")
    log.info("main table:\n%s", (tables / "main.md").read_text())
    return {"runs": len(runs)}


def quality_markdown(rows: list[dict]) -> str:
    def number(value, scale: float = 1.0, digits: str = ".3g") -> str:
        return "–" if value is None else f"{scale * value:{digits}}"

    header = ["dataset", "class", "synthetic", "FID", "KID", "baseline accuracy on synthetic %", "feature extractor"]
    lines = ["### Synthetic images per class: FID/KID against real training images, baseline accuracy on them", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["dataset"], row["class"], str(row["synthetic_images"]), number(row["fid"]), number(row["kid"])]
        cells += [number(row["baseline_accuracy_on_synthetic"], 100, ".0f"), row["feature_extractor"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
