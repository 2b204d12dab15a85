"""DiffBoost's tables: aggregation over runs, paired test, Markdown; and the run list."""

import re

import numpy as np
import pandas as pd
import pytest
import yaml

from medaug.diffboost.params import folds, runs, variants
from medaug.diffboost.report import LAYOUT, baseline_of
from medaug.papers import validate_config
from medaug.report.figures import layout_problems
from medaug.report.tables import paired_p_value, table, to_markdown

from .conftest import REPO


def _metrics(rng, variant, shift, tables, ratio, seed=3):
    rows = []
    for fold in range(3):
        for case in range(6):
            dice = 0.6 + shift + 0.01 * rng.standard_normal()
            rows.append(
                {
                    "dataset": "spleen",
                    "distance_unit": "mm",
                    "arm": "monai",
                    "variant": variant,
                    "protocol": "clean",
                    "fold": fold,
                    "seed": seed,
                    "case_id": f"c{fold}_{case}",
                    "dice": dice,
                    "precision": dice,
                    "recall": dice,
                    "jaccard": dice,
                    "accuracy": dice,
                    "hd95": 5 - shift,
                    "assd": 2 - shift,
                    "empty_prediction": float(case == 0),
                    "ratio": ratio,
                    "patch_size": 64,
                    "alpha": 0.6,
                    "architecture": "AttentionUnet",
                    "augmentation": "none" if ratio == 0 else "DiffBoost",
                    "tables": tables,
                }
            )
    return rows


def test_table_aggregates_runs_and_tests_against_the_baseline():
    rng = np.random.default_rng(0)
    metrics = pd.DataFrame(
        _metrics(rng, "baseline", 0.0, "main;augmentation", 0) + _metrics(rng, "diffboost_r50", 0.05, "ratio;main", 50)
    )
    main = table(metrics, "main", LAYOUT).set_index("variant")
    assert main.loc["baseline", "runs"] == 3 and main.loc["diffboost_r50", "runs"] == 3
    assert np.isclose(main.loc["diffboost_r50", "dice_mean"] - main.loc["baseline", "dice_mean"], 0.05, atol=0.01)
    assert np.isnan(main.loc["baseline", "p_dice_vs_baseline"])
    assert main.loc["diffboost_r50", "p_dice_vs_baseline"] < 0.001  # 18 paired cases, all better
    assert paired_p_value(metrics, "baseline", "baseline", LAYOUT) != paired_p_value(
        metrics, "diffboost_r50", "baseline", LAYOUT
    )
    markdown = to_markdown(table(metrics, "main", LAYOUT), "Main", LAYOUT)
    assert re.search(r"\| spleen \| mm \| monai \| clean \| diffboost_r50 \| 6[45]\.\d\d ± 0\.\d\d \|", markdown), (
        markdown
    )
    assert table(metrics, "alpha", LAYOUT).empty


def test_each_case_is_paired_once_and_the_official_pooled_std_sits_beside_the_std():
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(1)
    rows = []
    for seed in (3, 4):
        rows += _metrics(rng, "baseline", 0.0, "main", 0, seed) + _metrics(rng, "diffboost_r50", 0.01, "main", 50, seed)
    metrics = pd.DataFrame(rows)
    keys = ["fold", "case_id"]
    averaged = [metrics[metrics.variant == v].groupby(keys).dice.mean() for v in ("diffboost_r50", "baseline")]
    assert len(averaged[0]) == 18  # 3 folds x 6 cases, each once whatever the number of seeds
    expected = wilcoxon(averaged[0], averaged[1]).pvalue
    assert paired_p_value(metrics, "diffboost_r50", "baseline", LAYOUT) == pytest.approx(expected)
    main = table(metrics, "main", LAYOUT).set_index("variant")
    runs = metrics[metrics.variant == "baseline"].groupby(["fold", "seed"]).dice
    assert main.loc["baseline", "dice_pooled_std"] == pytest.approx(np.sqrt((runs.var(ddof=0)).mean()))
    assert main.loc["baseline", "empty_prediction"] == 6  # case 0 of 3 folds x 2 seeds
    assert "Dice % pooled std" in to_markdown(table(metrics, "main", LAYOUT), "Main", LAYOUT)


def test_architecture_rows_are_tested_against_the_same_architectures_baseline():
    assert baseline_of("monai", "UNet_diffboost") == "UNet_baseline"
    assert baseline_of("monai", "UNet_baseline") == "UNet_baseline"
    assert baseline_of("monai", "diffboost_r2") == baseline_of("monai", "aug_RandomGamma") == "baseline"
    assert baseline_of("nnunet", "nnunet_r2") == "nnunet_r0"


def test_runs_cover_every_variant_fold_seed_and_nnunet_ratio():
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    demo["diffboost"]["segmentation"]["ablation_architectures"] = ["UNet"]  # the paper scale's first
    config = validate_config(demo)
    found = runs(config)
    paths = [path for path, _ in found]
    assert len(paths) == len(set(paths))
    monai = [labels for _, labels in found if labels["arm"] == "monai"]
    count = sum(len(variants(config, d)) for d in config["diffboost"]["datasets"])
    expected = count * len(folds(config))
    assert len(monai) == expected * len(config["diffboost"]["segmentation"]["seeds"])
    nnunet = [labels for _, labels in found if labels["arm"] == "nnunet"]
    assert {labels["ratio"] for labels in nnunet} == set(config["diffboost"]["nnunet"]["ratios"])
    prostate = variants(config, "prostate")
    assert {"baseline", "diffboost_r2", "UNet_baseline", "UNet_diffboost", "aug_DiffBoostPlus"} <= set(prostate)
    assert "UNet_baseline" not in variants(config, "busi")  # ablations run on prostate only


@pytest.mark.parametrize("folds_per_point", [1, 3])
def test_dice_vs_ratio_draws_a_band_only_where_there_are_several_runs(tmp_path, folds_per_point):
    import matplotlib.collections
    import matplotlib.pyplot as plt

    from medaug.diffboost import report

    rng = np.random.default_rng(0)
    rows = _metrics(rng, "baseline", 0.0, "main;ratio", 0) + _metrics(rng, "diffboost_r2", 0.05, "ratio;main", 2)
    metrics = pd.DataFrame([row for row in rows if row["fold"] < folds_per_point])
    figure = report.dice_vs_ratio_figure(metrics, tmp_path / "f.png", tmp_path / "f.svg")
    bands = [c for ax in figure.axes for c in ax.collections if isinstance(c, matplotlib.collections.PolyCollection)]
    title = figure._suptitle.get_text()
    if folds_per_point == 1:
        assert not bands and "one run per point" in title and "CI" not in title
    else:
        assert bands and "95% CI" in title
    assert layout_problems(figure) == []
    plt.close(figure)


@pytest.mark.parametrize("features", ["Inception-v3 (FID literature)", "segmenter bottleneck (not comparable)"])
def test_generator_quality_table_names_distances_for_their_features(tmp_path, features):
    from medaug.diffboost.report import write_quality_table

    quality = pd.DataFrame(
        [
            {"dataset": "busi", "fold": 0, "source": source, "contrast": 0.1, "fid": fid, "kid": kid, "kid_std": 1.0}
            | {"fid_features": features}
            for source, fid, kid in (("real", 12.5, -3.0), ("fine-tuned", 3151.0, 3151320.0))
        ]
    )
    write_quality_table(quality, tmp_path)
    header = (tmp_path / "generator_quality.md").read_text().splitlines()[2]
    inception = features.startswith("Inception")
    assert ("| FID | KID |" in header) == inception
    assert ("| feature FD | feature KD |" in header) == (not inception)
    html = (tmp_path / "generator_quality.html").read_text()
    assert "3.15e+06" in html and "3151320" not in html  # three significant digits
    assert pd.read_csv(tmp_path / "generator_quality.csv").kid.max() == 3151320.0  # the CSV keeps the numbers


def test_per_class_table_scores_each_class_and_the_lesion_images_with_paired_tests(tmp_path):
    """BUSI-like cases: benign and malignant images with lesions, normal ones without. The
    DiffBoost arm wins on the lesion images and loses on the normal ones; the per-class table
    shows both, each class tested against the baseline on its own cases."""
    from medaug.diffboost.report import CLASS_LAYOUT, by_class, case_classes

    groups = {f"c0_{case}": ("benign", "malignant", "normal")[case % 3] for case in range(6)}
    folder = tmp_path / "prepared"
    folder.mkdir()
    pd.DataFrame({"case_id": list(groups), "group": list(groups.values())}).to_csv(
        folder / "cases.tsv", sep="\t", index=False
    )
    pixels = [0 if group == "normal" else 40 for group in groups.values()]
    pd.DataFrame({"case_id": list(groups), "foreground_pixels": pixels, "positive": True}).to_csv(
        folder / "slices.tsv", sep="\t", index=False
    )
    classes = case_classes({"spleen": folder})
    assert classes.set_index("case_id").has_lesion.to_dict() == {c: g != "normal" for c, g in groups.items()}

    rows = []
    for seed in (3, 4):
        for variant, sign in (("baseline", 0), ("diffboost_r50", 1)):
            for row in _metrics(np.random.default_rng(seed), variant, 0.0, "main", 50 * sign, seed):
                if row["fold"] == 0:
                    lesion = groups[row["case_id"]] != "normal"
                    row["dice"] = 0.6 + sign * (0.1 if lesion else -0.3) + 0.001 * seed
                    rows.append(row)
    metrics = pd.DataFrame(rows)
    expanded = by_class(metrics, classes)
    summary = table(expanded, "by_class", CLASS_LAYOUT).set_index(["case_class", "variant"])
    assert set(summary.index.get_level_values(0)) == {
        "benign (2 cases)",
        "malignant (2 cases)",
        "normal (2 cases)",
        "with lesion (4 cases)",
        "all (6 cases)",
    }
    gap = summary.dice_mean.xs("diffboost_r50", level=1) - summary.dice_mean.xs("baseline", level=1)
    assert np.allclose(gap[["benign (2 cases)", "with lesion (4 cases)"]], 0.1)
    assert np.isclose(gap["normal (2 cases)"], -0.3) and np.isclose(gap["all (6 cases)"], (4 * 0.1 - 2 * 0.3) / 6)
    assert (summary.runs == 2).all()
    # Each class is paired on its own cases: 4 lesion pairs all better (two-sided exact 0.125).
    assert summary.loc[("with lesion (4 cases)", "diffboost_r50"), "p_dice_vs_baseline"] == pytest.approx(0.125)
    assert summary.loc[("benign (2 cases)", "diffboost_r50"), "p_dice_vs_baseline"] == pytest.approx(0.5)
