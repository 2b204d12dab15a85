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
    (out_dir / f"{name}.md").write_text(f"### {TITLES[name]}\n\n{body_md}")
    (out_dir / f"{name}.html").write_text(html_page(TITLES[name], body_html))


def f1_per_class_figure(runs: pd.DataFrame, path: Path):
    from medaug.report.figures import pyplot, save

    plt = pyplot()
    datasets = sorted(runs.dataset.unique()) if not runs.empty else []
    figure, axes = plt.subplots(1, max(len(datasets), 1), figsize=(5.5 * max(len(datasets), 1), 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=False):
        subset = runs[runs.dataset == dataset]
        classes = [c for c in subset.columns if c.startswith("F_c ") and c != "F_c rare" and subset[c].notna().any()]
        pairs = set(zip(subset.arm, subset.ratio, strict=True))
        arms = sorted(pairs, key=lambda pair: (pair[0] != params.BASELINE, pair[1], pair[0]))
        width = 0.8 / max(len(arms), 1)
        for k, (arm, ratio) in enumerate(arms):
            runs_of = subset[(subset.arm == arm) & (subset.ratio == ratio)]
            means = [100 * runs_of[c].mean() for c in classes]
            # Error bars only over several seeds: one run has no spread to draw.
            stds = [100 * runs_of[c].std() for c in classes] if len(runs_of) > 1 else None
            label = arm if arm == params.BASELINE else f"{arm} ×{ratio:g}"
            ax.bar(np.arange(len(classes)) + k * width, means, width, yerr=stds, label=label, capsize=2)
        ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, [c[4:] for c in classes], rotation=20)
        ax.set_ylabel("F_c (%)")
        ax.set_title(f"{dataset} (rare: {subset.rare.iloc[0]})")
        ax.legend(fontsize=8)
    save(figure, path)
    return figure


def rare_f1_figure(runs: pd.DataFrame, path: Path) -> None:
    """The rare class's F_c against the ratio: one line per dataset and synthetic arm, each
    starting at the dataset's baseline (ratio 0)."""
    from medaug.report.figures import pyplot, save

    plt = pyplot()
    figure, ax = plt.subplots(figsize=(5.5, 3.8))
    for dataset in sorted(runs.dataset.unique()) if not runs.empty else []:
        subset = runs[runs.dataset == dataset]
        baseline = subset[subset.arm == params.BASELINE]
        for arm in sorted(set(subset.arm) - {params.BASELINE}):
            grouped = pd.concat([baseline, subset[subset.arm == arm]]).groupby("ratio")["F_c rare"]
            means, stds = 100 * grouped.mean(), 100 * grouped.std()
            spread = stds if stds.notna().all() else None  # one seed per point: no bars
            ax.errorbar(means.index, means, yerr=spread, marker="o", capsize=3, label=f"{dataset} {arm}")
    ax.set_xlabel("synthetic patches per real patch (0 = baseline)")
    ax.set_ylabel("rare-class F_c (%)")
    ax.legend(fontsize=8)
    save(figure, path)


def samples_figure(folders: list[str], prepared: dict[str, str], path: Path) -> None:
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
    figure, axes = plt.subplots(max(len(panels), 1), 3, figsize=(6.3, 2.1 * max(len(panels), 1)), squeeze=False)
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
        for ax, title in zip(ax_row, ("real crop", "virtual map", "synthetic"), strict=True):
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    save(figure, path)


def _report(job: Job) -> dict:
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
