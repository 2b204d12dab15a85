"""DiffBoost's tables and figures from the per-case metrics of every downstream run.

The tables (:mod:`medaug.report.tables`) average per-case metrics per (fold, seed) run; a
cell is the mean ± standard deviation over runs, with the official pooled std beside it.
The paired test compares each variant with its baseline (the same architecture's, in the
architecture ablation) by a Wilcoxon signed-rank test on per-case Dice, each test case of
each fold paired once. Distances are in mm, or in pixels where the dataset has no
physical spacing (BUSI): the ``distance_unit`` column says which.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from medaug.diffboost import stages
from medaug.diffboost.params import NNUNET_ARM, QUALITY_SOURCES
from medaug.diffboost.slices import load_slices, load_synthetic_pool, read_slice_table
from medaug.report import tables
from medaug.report.captions import marked, stand_in_titles
from medaug.report.figures import pyplot, save
from medaug.stage import Job, Stage

log = logging.getLogger(__name__)


def baseline_of(arm: str, variant: str) -> str:
    """The variant a row is tested against: the nnU-Net arm's ratio 0; for an architecture
    ablation, the same architecture's baseline; otherwise the arm's baseline."""
    if arm == NNUNET_ARM:
        return "nnunet_r0"
    if variant.endswith("_diffboost"):
        return variant.removesuffix("_diffboost") + "_baseline"
    return variant if variant.endswith("_baseline") else "baseline"


LAYOUT = tables.Layout(
    # Per-case columns of medaug.metrics.segmentation.case_metrics; the first is the primary.
    metrics={
        "dice": ("Dice %", 100),
        "jaccard": ("Jaccard %", 100),
        "precision": ("Precision %", 100),
        "recall": ("Recall %", 100),
        "accuracy": ("Accuracy %", 100),
        "hd95": ("HD95", 1),
        "assd": ("ASSD", 1),
    },
    counts={"empty_prediction": "empty predictions"},
    run_keys=("dataset", "arm", "variant", "protocol", "fold", "seed"),
    row_keys=("dataset", "distance_unit", "arm", "protocol", "variant"),
    factors=("ratio", "patch_size", "alpha", "architecture", "augmentation"),
    tables={
        "main": ("Baseline vs DiffBoost (paper Table: main comparison)", "variant"),
        "ratio": ("Ablation: synthetic images per real slice", "ratio"),
        "patch": ("Ablation: merging-mask patch size r", "patch_size"),
        "alpha": ("Ablation: merging-mask alpha", "alpha"),
        "architecture": ("Ablation: segmentation architecture", "architecture"),
        "augmentation": ("Ablation: augmentation arms", "augmentation"),
    },
    baseline=baseline_of,
    pair_keys=("dataset", "protocol", "fold", "case_id"),
)


# The per-class table: the main table's runs, each scored on the cases of one image class
# (where a dataset has several, as BUSI's benign / malignant / normal), on the cases with a
# lesion (where some have none) and on all cases.
WITH_LESION, ALL_CASES = "with lesion", "all"
CLASS_LAYOUT = dataclasses.replace(
    LAYOUT,
    # The main table's other metrics stay there: this one reads across classes.
    metrics={metric: LAYOUT.metrics[metric] for metric in ("dice", "precision", "recall", "hd95")},
    run_keys=(*LAYOUT.run_keys, "case_class"),
    row_keys=("dataset", "distance_unit", "arm", "protocol", "case_class", "variant"),
    pair_keys=(*LAYOUT.pair_keys, "case_class"),
    tables={"by_class": ("Test metrics per image class and on the images with a lesion (main-table runs)", "variant")},
)


def case_classes(prepared: dict[str, str | Path]) -> pd.DataFrame:
    """(dataset, case_id, group, has_lesion) of every prepared case: its class folder
    (``group``, empty where a dataset has none) and whether its mask has any foreground."""
    frames = []
    for dataset, folder in prepared.items():
        cases = pd.read_csv(Path(folder) / "cases.tsv", sep="\t", dtype={"case_id": str, "group": str})
        slices = pd.read_csv(Path(folder) / "slices.tsv", sep="\t", dtype={"case_id": str})
        # Foreground in the mask, not "positive" (which marks every slice of a 2D dataset).
        lesion = (slices.groupby("case_id").foreground_pixels.sum() > 0).rename("has_lesion")
        frame = cases[["case_id", "group"]].fillna({"group": ""}).join(lesion, on="case_id")
        frames.append(frame.assign(dataset=dataset))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def by_class(metrics: pd.DataFrame, classes: pd.DataFrame) -> pd.DataFrame:
    """The main table's per-case rows, once per case class they belong to (``case_class``,
    named with its case count per protocol); ``tables`` set to the per-class table."""
    main = metrics[metrics.tables.str.split(";").apply(lambda names: "main" in names)]
    merged = main.merge(classes, on=["dataset", "case_id"], how="left")
    parts = []
    for _, rows in merged.groupby(["dataset", "protocol"], sort=False):
        groups = sorted(g for g in rows.group.dropna().unique() if g)
        subsets = {group: rows[rows.group == group] for group in groups} if len(groups) > 1 else {}
        lesion = rows.has_lesion.fillna(True).astype(bool)
        if not lesion.all():
            subsets[WITH_LESION] = rows[lesion]
        subsets[ALL_CASES] = rows
        for name, subset in subsets.items():
            label = f"{name} ({subset.case_id.nunique()} cases)"
            parts.append(subset.drop(columns=["group", "has_lesion"]).assign(case_class=label, tables="by_class"))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*metrics.columns, "case_class"])


def write_report(
    metric_files: list[str],
    labels: list[dict],
    metrics_tsv: str | Path,
    tables_dir: str | Path,
    ratio_png: str | Path,
    ratio_svg: str | Path,
    samples_png: str | Path,
    samples: list[tuple[str, str, str, str]],
    sample_ratio: int,
    quality_files: list[str] = (),
    quality_datasets: list[str] = (),
) -> None:
    """Every table and figure. ``samples``: (dataset, prepared, conditions, synthetic
    folder) of each dataset shown in the samples figure; ``quality_files``: the
    generator-quality records of ``quality_datasets``."""
    metrics = tables.collect(metric_files, labels)
    metrics.to_csv(metrics_tsv, sep="\t", index=False, float_format="%.6g")
    rows = tables.write_tables(metrics, tables_dir, LAYOUT)
    prepared = {dataset: folder for dataset, folder, *_ in samples}
    rows |= tables.write_tables(by_class(metrics, case_classes(prepared)), tables_dir, CLASS_LAYOUT)
    if quality_files:
        quality = quality_table(list(quality_files), list(quality_datasets))
        write_quality_table(quality, tables_dir)
        rows["generator_quality"] = len(quality)
    log.info("tables written: %s", rows)
    dice_vs_ratio_figure(metrics, ratio_png, ratio_svg)
    panels = [panel for sample in samples for panel in sample_panels(*sample, sample_ratio)]
    samples_figure(panels, samples_png, columns=2 + sample_ratio)


QUALITY_TITLE = "Generator quality: does it follow its condition, and do its images teach? (not in the paper)"


QUALITY_COLUMNS = {
    "contrast": "contrast (in - ring)",
    "contrast_of_real": "contrast / real",
    "correlation": "corr. with source",
    "nearest_real": "nearest real (RMS)",
    "fid": "FID",
    "kid": "KID",
    "kid_std": "KID std",
    "segmenter_dice": "Dice, segmenter trained on source",
    "fid_features": "FID/KID features",
}


def quality_table(files: list[str], datasets: list[str]) -> pd.DataFrame:
    """One row per dataset, fold and source (real, fine-tuned, untrained)."""
    rows = []
    for path, dataset in zip(files, datasets, strict=True):
        record = json.loads(Path(path).read_text())
        for source in QUALITY_SOURCES:
            row = {"dataset": dataset, "fold": record["fold"], "source": source, **record[source]}
            rows.append({**row, "fid_features": record["fid_features"]})
    return pd.DataFrame(rows)


# Without Inception-v3 features the distances are not FID/KID: named for what they are.
FEATURE_DISTANCE_COLUMNS = {
    "fid": "feature FD",
    "kid": "feature KD",
    "kid_std": "feature KD std",
    "fid_features": "FD/KD features",
}


def quality_headers(quality: pd.DataFrame) -> dict[str, str]:
    """Column headers of ``generator_quality``: FID/KID only where every row used the
    Inception-v3 features of the FID literature."""
    inception = bool(len(quality)) and quality.fid_features.str.startswith("Inception").all()
    return QUALITY_COLUMNS if inception else QUALITY_COLUMNS | FEATURE_DISTANCE_COLUMNS


def write_quality_table(quality: pd.DataFrame, tables_dir: str | Path) -> None:
    """``generator_quality`` as CSV (numbers), Markdown and HTML (three significant digits)."""
    tables_dir = Path(tables_dir)
    quality.to_csv(tables_dir / "generator_quality.csv", index=False, float_format="%.6g")
    shown = quality.map(lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)).rename(
        columns=quality_headers(quality)
    )
    header = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines = [f"### {marked(QUALITY_TITLE)}", "", *header]
    lines += ["| " + " | ".join(row) + " |" for row in shown.itertuples(index=False)]
    (tables_dir / "generator_quality.md").write_text("\n".join(lines) + "\n")
    html = tables.html_page(QUALITY_TITLE, shown.to_html(index=False, border=0))
    (tables_dir / "generator_quality.html").write_text(html)


def dice_vs_ratio_figure(metrics: pd.DataFrame, png: str | Path, svg: str | Path):
    """Dice against synthetic ratio (0 = real only), with bootstrap 95% CIs over runs where
    every point has several (the title says which); returns the figure."""
    pyplot()
    import seaborn as sns

    runs = tables.per_run(metrics, LAYOUT)
    runs = runs[runs.tables.str.split(";").apply(lambda t: "ratio" in t or "main" in t)]
    runs = runs[runs.augmentation.isin(["none", "DiffBoost"]) | (runs.arm == NNUNET_ARM)]
    # A band only where a point has several runs (folds x seeds): one run has no interval.
    points = ["dataset", "arm", "protocol", "ratio"]
    several = bool((runs.groupby(points).size() > 1).all()) if len(runs) else False
    grid = sns.relplot(
        data=runs,
        x="ratio",
        y="dice",
        hue="dataset",
        style="arm",
        col="protocol",
        kind="line",
        marker="o",
        errorbar=("ci", 95) if several else None,
        n_boot=1000,
        seed=0,
        height=3,
        aspect=1.2,
    )
    grid.set_axis_labels("synthetic images per real slice (0 = real only)", "test Dice")
    summary = "mean, 95% CI over folds x seeds" if several else "one run per point"
    grid.figure.suptitle(f"DiffBoost: Dice vs synthetic ratio ({summary})", y=1.04)
    save(grid.figure, png, svg)
    return grid.figure


def samples_figure(panels: list[dict], png: str | Path, columns: int) -> None:
    """A grid with one row per example: real slice, condition map, synthetic images."""
    plt = pyplot()
    figure, axes = plt.subplots(
        len(panels), columns, figsize=(1.6 * columns, 1.6 * len(panels) + 0.4), squeeze=False, layout="constrained"
    )
    figure.suptitle("DiffBoost: real slices, their condition maps and synthetic images", fontsize="medium")
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
    save(figure, png)


def sample_panels(
    dataset: str,
    prepared_dir: str | Path,
    conditions_dir: str | Path,
    synthetic_dir: str | Path,
    ratio: int,
    n: int = 3,
) -> list[dict]:
    """Up to ``n`` real/condition/synthetic examples of one fold, picked evenly."""
    pool = load_synthetic_pool(synthetic_dir, ratio)
    slices = read_slice_table(prepared_dir)
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


def _report(job: Job) -> None:
    """Every table and figure of the run; their titles say so where the data are stand-ins."""
    with stand_in_titles(job.settings["stand_in"]):
        _tables_and_figures(job)


def _tables_and_figures(job: Job) -> None:
    settings, inputs, outputs = job.settings, job.inputs, job.outputs
    samples = list(
        zip(settings["sample_datasets"], inputs["prepared"], inputs["conditions"], inputs["synthetic"], strict=True)
    )
    write_report(
        list(inputs["metrics"]),
        settings["labels"],
        outputs["metrics"],
        outputs["tables"],
        outputs["ratio_png"],
        outputs["ratio_svg"],
        outputs["samples"],
        samples,
        settings["sample_ratio"],
        list(inputs["quality"]),
        settings["quality_datasets"],
    )


REPORT = Stage(stages.REPORT, _report)
report_entry = REPORT.entry
