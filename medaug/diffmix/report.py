"""DiffMix's tables and figures.

Tables: ``label_maps`` (nuclei per class of the real training tiles and of each kind of
virtual map), ``synthesis`` (do the SDEdit patches follow their maps: the grey-level
contrast between background and nuclei of the virtual map, beside the real crop under the
virtual map and under its own map) and ``hovernet`` (the HoVer-Net protocol per dataset,
arm and ratio: mean ± std over seeds, the rare class's F_c in its own column, and a paired
t-test over seeds of the rare class's F_c against the baseline).
Figures: ``f1_per_class`` (F_c per class and arm), ``rare_f1_vs_ratio`` and
``samples`` (real crop / virtual map / synthetic patch).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from medaug.diffmix import params, stages
from medaug.diffmix.paths import SYNTHETIC_MANIFEST, SYNTHETIC_QUALITY
from medaug.io import atomic_output, read_json
from medaug.report.captions import marked, stand_in_titles
from medaug.report.tables import html_page
from medaug.stage import Job, Stage

log = logging.getLogger(__name__)

TITLES = {
    "label_maps": "Nuclei per class: real training tiles vs virtual label maps",
    "synthesis": "SDEdit patches: nucleus contrast under the virtual maps (grey, background minus nuclei)",
    "hovernet": "HoVer-Net on the test tiles, per arm and ratio (mean ± std over seeds)",
}
SUMMARY_METRICS = {"dice": "Dice", "aji": "AJI", "dq": "DQ", "sq": "SQ", "pq": "PQ", "f1_detection": "F_d"}
SAMPLE_ROWS = 3


def label_map_table(records: list[dict]) -> pd.DataFrame:
    """One row per (dataset, map kind, class): nuclei and share, real and virtual."""
    rows = []
    for record in records:
        real_total, virtual_total = sum(record["real"].values()), sum(record["virtual"].values())
        for label, real in record["real"].items():
            virtual = record["virtual"][label]
            rows.append(
                {
                    "dataset": record["dataset"],
                    "map_kind": record["map_kind"],
                    "class": f"{label} {record['labels'][label]}"
                    + (" (rare)" if int(label) == record["rare_class"] else ""),
                    "tiles": len(record["tiles"]),
                    "real nuclei": real,
                    "virtual nuclei": virtual,
                    "real share %": round(100 * real / real_total, 1) if real_total else float("nan"),
                    "virtual share %": round(100 * virtual / virtual_total, 1) if virtual_total else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def synthesis_table(records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "dataset": r["dataset"],
                "map_kind": r["map_kind"],
                "patches": r["patches"],
                "synthetic under its map": round(r["synthetic"], 3),
                "real crop under the virtual map": round(r["real_under_virtual"], 3),
                "real crop under its own map": round(r["real"], 3),
            }
            for r in records
        ]
    )


def run_frame(records: list[dict]) -> pd.DataFrame:
    """One row per HoVer-Net run: its labels and metrics (F_c columns named by class)."""
    rows = []
    for record in records:
        row = {key: record[key] for key in ("dataset", "arm", "seed")}
        row |= {
            "ratio": float(record["ratio"]),
            "real": record["real_patches"],
            "synthetic": record["synthetic_patches"],
        }
        metrics = record["metrics"]
        row |= {key: metrics[key] for key in SUMMARY_METRICS}
        for label, name in record["labels"].items():
            if int(label):
                row[f"F_c {name}"] = metrics[f"f1_type{label}"]
        row["rare"] = record["labels"][str(record["rare_class"])]
        row["F_c rare"] = metrics[f"f1_type{record['rare_class']}"]
        rows.append(row)
    return pd.DataFrame(rows)


def paired_p(runs: pd.DataFrame, metric: str) -> float:
    """Paired t-test over seeds of ``metric`` (one row per run of the two groups); NaN below
    two pairs or when every difference is zero."""
    from scipy.stats import ttest_rel

    wide = runs.pivot_table(index="seed", columns="group", values=metric)
    wide = wide.dropna()
    if len(wide) < 2 or wide.shape[1] < 2 or np.allclose(wide.iloc[:, 0], wide.iloc[:, 1]):
        return float("nan")
    return float(ttest_rel(wide.iloc[:, 1], wide.iloc[:, 0]).pvalue)


def hovernet_table(runs: pd.DataFrame) -> pd.DataFrame:
    """mean ± std over seeds per (dataset, arm, ratio); p: rare-class F_c vs the baseline."""
    if runs.empty:
        return pd.DataFrame()
    metrics = [*SUMMARY_METRICS, *[c for c in runs.columns if c.startswith("F_c ")]]
    rows = []
    for (dataset, arm, ratio), group in runs.groupby(["dataset", "arm", "ratio"], sort=True):
        row = {"dataset": dataset, "arm": arm, "ratio": f"{ratio:g}", "rare class": group.rare.iloc[0]}
        row |= {
            "seeds": len(group),
            "real patches": int(group.real.iloc[0]),
            "synthetic patches": int(group.synthetic.iloc[0]),
        }
        for metric in metrics:
            values = group[metric].astype(float) * 100
            label = SUMMARY_METRICS.get(metric, metric)
            if values.isna().all():
                row[label] = "n/a"
                continue
            row[label] = f"{values.mean():.1f} ± {values.std():.1f}" if len(values) > 1 else f"{values.mean():.1f}"
        baseline = runs[(runs.dataset == dataset) & (runs.arm == params.BASELINE)]
        if arm == params.BASELINE or baseline.empty:
            row["p (F_c rare vs baseline)"] = ""
        else:
            pair = pd.concat([baseline.assign(group=0), group.assign(group=1)])
            p = paired_p(pair, "F_c rare")
            row["p (F_c rare vs baseline)"] = "" if np.isnan(p) else f"{p:.3g}"
        rows.append(row)
    table = pd.DataFrame(rows)
    # Per-class columns of another dataset's classes are n/a here, not empty.
    return table.fillna("n/a")


def write_table(out_dir: Path, name: str, table: pd.DataFrame) -> None:
    table.to_csv(out_dir / f"{name}.csv", index=False)
    if table.empty:
        body_md, body_html = "(no rows)\n", "<p>(no rows)</p>"
    else:
        header = "| " + " | ".join(map(str, table.columns)) + " |\n|" + "---|" * len(table.columns) + "\n"
        body_md = header + "".join(
            "| " + " | ".join(str(v) for v in row) + " |\n" for row in table.itertuples(index=False)
        )
        body_html = table.to_html(index=False, border=0)
    (out_dir / f"{name}.md").write_text(f"### {marked(TITLES[name])}\n\n{body_md}")
    (out_dir / f"{name}.html").write_text(html_page(TITLES[name], body_html))


def _arm_label(arm: str, ratio: float) -> str:
    """A group of runs as the figures name it: the baseline alone, a synthetic arm with its ratio."""
    return arm if arm == params.BASELINE else f"{arm} ×{ratio:g}"


def _spread(runs: pd.DataFrame) -> tuple[str | None, str]:
    """seaborn's ``errorbar`` for ``runs`` and the words that say what a point is. ± sd bars
    only when every (dataset, arm, ratio) point has several seeds: one run has no spread, and
    bars on some points only would pass the others off as exact."""
    seeds = runs.groupby(["dataset", "arm", "ratio"]).size()
    fewest, most = int(seeds.min()), int(seeds.max())
    if fewest > 1:
        counted = f"{fewest}" if fewest == most else f"{fewest}–{most}"
        return "sd", f"mean ± sd over {counted} seeds"
    if most == 1:
        return None, "one seed"
    return None, f"mean over 1–{most} seeds, no bars"


def _no_runs(ax, what: str = "no HoVer-Net runs") -> None:
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def f1_per_class_figure(runs: pd.DataFrame, path: Path):
    """Per dataset, a panel of F_c (%) per class with a bar per arm and ratio: the mean over
    seeds, ± sd bars where every bar has several seeds. One legend serves every panel."""
    import seaborn as sns
    from matplotlib.patches import Patch

    from medaug.report.figures import pyplot, save

    plt = pyplot()
    datasets = sorted(runs.dataset.unique()) if not runs.empty else []
    panels = max(len(datasets), 1)
    figure, axes = plt.subplots(
        1, panels, figsize=(4.5 * panels + 1.3, 3.4), sharey=True, squeeze=False, layout="constrained"
    )
    if not datasets:
        _no_runs(axes[0, 0])
        save(figure, path)
        return figure
    groups = sorted(
        set(zip(runs.arm, runs.ratio, strict=True)), key=lambda pair: (pair[0] != params.BASELINE, pair[1], pair[0])
    )
    arm_labels = [_arm_label(arm, ratio) for arm, ratio in groups]
    # One colour per arm and ratio in every panel, so that one legend serves them all.
    palette = dict(zip(arm_labels, sns.color_palette(n_colors=len(arm_labels)), strict=True))
    for ax, dataset in zip(axes[0], datasets, strict=True):
        subset = runs[runs.dataset == dataset]
        classes = [c for c in subset.columns if c.startswith("F_c ") and c != "F_c rare" and subset[c].notna().any()]
        labelled = subset.assign(arm_label=[_arm_label(a, r) for a, r in zip(subset.arm, subset.ratio, strict=True)])
        # Long form: one row per run and class.
        long = labelled.melt(id_vars=["arm_label", "seed"], value_vars=classes, var_name="class", value_name="F_c")
        long["class"] = long["class"].str.removeprefix("F_c ")
        long["F_c"] = 100 * long["F_c"].astype(float)
        errorbar, spread = _spread(subset)
        sns.barplot(
            data=long,
            x="class",
            y="F_c",
            hue="arm_label",
            order=[c.removeprefix("F_c ") for c in classes],
            hue_order=[label for label in arm_labels if label in set(long.arm_label)],
            palette=palette,
            errorbar=errorbar,
            legend=False,
            ax=ax,
        )
        ax.set(xlabel="", ylabel="F_c (%)", ylim=(0, 100), title=f"{dataset} (rare: {subset.rare.iloc[0]}): {spread}")
    handles = [Patch(facecolor=palette[label], label=label) for label in arm_labels]
    figure.legend(handles=handles, title="arm", loc="outside right upper")
    save(figure, path)
    return figure


def rare_f1_figure(runs: pd.DataFrame, path: Path):
    """The rare class's F_c (%) against the synthetic-to-real ratio: a colour per dataset, a
    line style per synthetic arm, each line starting at its dataset's baseline (ratio 0); the
    mean over seeds, ± sd bars where every point has several seeds."""
    import seaborn as sns

    from medaug.report.figures import pyplot, save

    plt = pyplot()
    figure, ax = plt.subplots(figsize=(5.8, 3.6), layout="constrained")
    lines = []
    for dataset in sorted(runs.dataset.unique()) if not runs.empty else []:
        subset = runs[runs.dataset == dataset]
        baseline = subset[subset.arm == params.BASELINE]
        for arm in sorted(set(subset.arm) - {params.BASELINE}):
            # The baseline's runs once more under the arm's name, so that its line starts at ratio 0.
            lines.append(pd.concat([baseline.assign(arm=arm), subset[subset.arm == arm]]))
    if not lines:
        _no_runs(ax, "no HoVer-Net runs of a synthetic arm" if len(runs) else "no HoVer-Net runs")
        save(figure, path)
        return figure
    long = pd.concat(lines, ignore_index=True)[["dataset", "arm", "ratio", "seed", "F_c rare"]]
    long["F_c rare"] = 100 * long["F_c rare"].astype(float)
    errorbar, spread = _spread(runs)
    sns.lineplot(
        data=long,
        x="ratio",
        y="F_c rare",
        hue="dataset",
        style="arm",
        markers=True,
        errorbar=errorbar,
        err_style="bars",
        err_kws={"capsize": 3},
        ax=ax,
    )
    ratios = sorted(long.ratio.unique())
    ax.set_xticks(ratios, [f"{ratio:g}" for ratio in ratios])
    ax.set(
        xlabel="synthetic patches per real patch (0 = baseline)",
        ylabel="rare-class F_c (%)",
        title=f"Rare-class F_c on the test tiles: {spread}",
    )
    # Beside the axes: inside, the legend would hide points.
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    save(figure, path)
    return figure


def samples_figure(folders: list[str], prepared: dict[str, str], path: Path):
    """Per dataset and map kind, a few patches: the real crop, the virtual map (types as
    colours), the synthetic patch."""
    from medaug.report.figures import pyplot, save

    plt = pyplot()
    panels = []
    for folder in folders:
        folder = Path(folder)
        quality = read_json(folder / SYNTHETIC_QUALITY)
        manifest = pd.read_csv(folder / SYNTHETIC_MANIFEST, sep="\t")
        picks = manifest.sort_values("n_rare", ascending=False).head(SAMPLE_ROWS)
        for row in picks.itertuples():
            panels.append((quality["dataset"], quality["map_kind"], folder, row))
    rows = max(len(panels), 1)
    figure, axes = plt.subplots(rows, 3, figsize=(6.3, 2.1 * rows), squeeze=False, layout="constrained")
    # Column titles once, over the top row: every row shows the same three things.
    for ax, title in zip(axes[0], ("real crop", "virtual map (types as colours)", "synthetic"), strict=True):
        ax.set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if not panels:
        axes[0, 1].text(0.5, 0.5, "no synthetic patches", ha="center", va="center", transform=axes[0, 1].transAxes)
    tiles: dict[tuple[str, str], np.ndarray] = {}
    for ax_row, (dataset, kind, folder, row) in zip(axes, panels, strict=False):
        key = (dataset, row.source_tile)
        if key not in tiles:
            with np.load(Path(prepared[dataset]) / "tiles" / f"{row.source_tile}.npz") as data:
                tiles[key] = data["image"]
        patch = np.load(folder / "patches" / f"{row.patch_id}.npy")
        size = patch.shape[0]
        real = tiles[key][row.top : row.top + size, row.left : row.left + size]
        ax_row[0].imshow(real)
        ax_row[1].imshow(patch[..., 4], cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
        ax_row[2].imshow(patch[..., :3].astype(np.uint8))
        ax_row[0].set_ylabel(f"{dataset}\n{kind}", fontsize=8)
    save(figure, path)
    return figure


def _report(job: Job) -> dict:
    """Every table and figure of the run; their titles say so where the data are stand-ins."""
    with stand_in_titles(job.settings["stand_in"]):
        return _tables_and_figures(job)


def _tables_and_figures(job: Job) -> dict:
    records = [read_json(Path(folder) / "counts.json") for folder in job.inputs["maps"]]
    runs = run_frame([read_json(path) for path in job.inputs["metrics"]])
    synthesis = [read_json(Path(folder) / SYNTHETIC_QUALITY) for folder in job.inputs["synthetic"]]
    tables = {
        "label_maps": label_map_table(records),
        "synthesis": synthesis_table(synthesis),
        "hovernet": hovernet_table(runs),
    }
    with atomic_output(job.outputs["tables"], directory=True) as tmp:
        for name, table in tables.items():
            write_table(tmp, name, table)
    prepared = dict(zip(job.settings["datasets"], job.inputs["prepared"], strict=True))
    with atomic_output(job.outputs["figures"], directory=True) as tmp:
        f1_per_class_figure(runs, tmp / "f1_per_class.png")
        rare_f1_figure(runs, tmp / "rare_f1_vs_ratio.png")
        samples_figure(job.inputs["synthetic"], prepared, tmp / "samples.png")
    counts = {name: len(table) for name, table in tables.items()}
    log.info("tables: %s", counts)
    return counts


REPORT = Stage(stages.REPORT, _report)
report_entry = REPORT.entry
