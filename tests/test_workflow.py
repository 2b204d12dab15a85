"""Snakemake itself: lint, the DAG, a real run of the data stages, readable failures."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medaug.claims import failures
from medaug.papers import demo_claims

from .conftest import CI_RUN_GUARD, DEMO_RUN_GUARD, REPO, snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.timeout(DEMO_RUN_GUARD + CI_RUN_GUARD)]


def test_lint_is_clean():
    result = snakemake(["--lint"], REPO, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dry_run_plans_every_built_stage_of_all_three_papers():
    plan = snakemake(["-n", "--forceall"], REPO).stdout
    for rule in (
        "make_demo_dataset",
        "prepare_dataset",
        "make_splits",
        "summarize_benchmarks",
        "dcube_train_generator",
        "dcube_select_blocks",
        "dcube_sample",
        "dcube_classify",
        "dcube_synthetic_quality",
        "dcube_report",
        "diffmix_label_maps",
        "diffmix_train_generator",
        "diffmix_sample",
        "diffmix_hovernet",
        "diffmix_report",
    ):
        assert f"rule {rule}:" in plan, rule
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for paper in ("diffboost", "diffmix", "dcube"):
        for dataset in config[paper]["datasets"]:
            assert f"results/{paper}/{dataset}/splits.json" in plan
        assert f"rule {paper}:" in snakemake(["-n", "--forceall", paper], REPO).stdout


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The whole demo, as `make demo` runs it, in a fresh working directory."""
    workdir = tmp_path_factory.mktemp("run")
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    args = ["--cores", "2", "--directory", str(workdir), "--configfile", str(workdir / "config.yaml")]
    snakemake(args, workdir, timeout=DEMO_RUN_GUARD)
    return workdir


def test_demo_prepares_every_papers_datasets_and_their_splits(demo_run):
    for paper, dataset in [
        ("diffboost", "busi"),
        ("diffboost", "spleen"),
        ("diffboost", "prostate"),
        ("diffmix", "consep"),
        ("diffmix", "glysac"),
        ("dcube", "pancreas"),
    ]:
        assert (demo_run / "results" / paper / dataset / "prepared" / "meta.json").is_file()
        assert (demo_run / "results" / paper / dataset / "splits.json").is_file()
        assert (demo_run / "logs" / "prepare_dataset" / paper / f"{dataset}.log").is_file()


def test_demo_runs_diffboost_to_its_tables_and_figures(demo_run):
    base = demo_run / "results" / "diffboost"
    metrics = pd.read_csv(base / "metrics.tsv", sep="\t")
    config = yaml.safe_load((demo_run / "config.yaml").read_text())
    assert set(metrics.dataset) == set(config["diffboost"]["datasets"])
    assert set(metrics.protocol) == {"official", "clean"} and set(metrics.arm) == {"monai", "nnunet"}
    assert metrics[["dice", "precision", "recall", "hd95"]].notna().all().all()
    # The demo skips the architecture ablation (its budget); the paper-shape tests run it.
    for table in ("main", "ratio", "patch", "alpha", "augmentation"):
        assert not pd.read_csv(base / "tables" / f"{table}.csv").empty, table
        assert (base / "tables" / f"{table}.md").read_text().startswith("### ")
    main = pd.read_csv(base / "tables" / "main.csv")
    assert {"baseline", "diffboost_r2", "nnunet_r0"} <= set(main.variant)
    for figure in ("dice_vs_ratio.png", "dice_vs_ratio.svg", "samples.png"):
        assert (base / "figures" / figure).stat().st_size > 1000
    counts = json.loads((base / "spleen" / "fold0" / "synthetic" / "ratio2" / "counts.json").read_text())
    assert counts["per_slice_min"] == counts["per_slice_max"] == 2
    # The demo's segmenters learn (a mean-mask predictor scores below 0.3, tests/test_demo.py):
    # the baseline and the nnU-Net arm at ratio 0 clear their bars (medaug/<paper>/claims.py) on
    # every dataset under both protocols.
    learned = metrics[metrics.variant.isin(["baseline", "nnunet_r0"])]
    assert learned.groupby(["dataset", "variant", "protocol"]).ngroups == 2 * 3 * 2
    assert not failures(demo_run, demo_claims("diffboost"))


def test_demo_runs_diffmix_label_maps_that_raise_the_rare_class(demo_run):
    """GradMix balancing raises the rare class's share of nuclei and keeps the total; the
    enlarging maps add nuclei; every donor comes from a training tile of the fold."""
    base = demo_run / "results" / "diffmix"
    table = pd.read_csv(base / "tables" / "label_maps.csv")
    rare = table[table["class"].str.endswith("(rare)")].set_index(["dataset", "map_kind"])
    for dataset in ("consep", "glysac"):
        balancing, enlarging = rare.loc[(dataset, "balancing")], rare.loc[(dataset, "enlarging")]
        assert balancing["virtual share %"] > balancing["real share %"], dataset
        assert enlarging["virtual nuclei"] > enlarging["real nuclei"], dataset
        totals = table[(table.dataset == dataset) & (table.map_kind == "balancing")]
        assert totals["virtual nuclei"].sum() == totals["real nuclei"].sum(), dataset
        splits = json.loads((base / dataset / "splits.json").read_text())
        for kind in ("balancing", "enlarging"):
            edits = pd.read_csv(base / dataset / "virtual_maps" / kind / "edits.tsv", sep="\t")
            assert set(edits.donor_tile) <= set(splits["folds"][0]["train"]), (dataset, kind)


def test_demo_runs_diffmix_to_hovernet_tables_and_figures(demo_run):
    """DiffMix's demo shows the mechanism: the SDEdit patches follow their virtual maps (the
    nuclei of the map are darker than its background, more so than in the real crop scored
    under the same map, i.e. more than copying the real crop), and HoVer-Net's baseline
    learns (its Dice far above an all-background or all-foreground prediction)."""
    base = demo_run / "results" / "diffmix"
    synthesis = pd.read_csv(base / "tables" / "synthesis.csv")
    assert len(synthesis) == 4
    # the patches follow their maps; HoVer-Net's baseline learns (medaug/<paper>/claims.py)
    assert not failures(demo_run, demo_claims("diffmix"))
    for dataset in ("consep", "glysac"):
        for kind in ("balancing", "enlarging"):
            folder = base / dataset / "synthetic" / kind
            manifest = pd.read_csv(folder / "manifest.tsv", sep="\t")
            patch = np.load(folder / "patches" / f"{manifest.patch_id[0]}.npy")
            assert patch.shape == (64, 64, 5) and patch[..., 3].max() == manifest.n_nuclei[0]
            assert set(manifest.source_tile) <= set(
                json.loads((base / dataset / "splits.json").read_text())["folds"][0]["train"]
            )
        diffmix = json.loads(
            (base / dataset / "hovernet" / "diffmix" / "ratio1" / "seed0" / "metrics.json").read_text()
        )
        assert diffmix["synthetic_patches"] == diffmix["real_patches"] == 27
    hovernet = pd.read_csv(base / "tables" / "hovernet.csv")
    assert set(zip(hovernet.dataset, hovernet.arm, strict=True)) == {
        (d, a) for d in ("consep", "glysac") for a in ("baseline", "gradmix", "diffmix")
    }
    assert "F_c rare" in hovernet.columns
    for figure in ("f1_per_class", "rare_f1_vs_ratio", "samples"):
        assert (base / "figures" / f"{figure}.png").stat().st_size > 1000, figure


def test_demo_runs_dcube_to_its_tables_and_figures(demo_run):
    """D-Cube's demo shows the mechanism: both classifiers well above chance, the imbalance
    sweep moves the minority class's recall, and the per-class check of the synthetic
    images; no test image reaches step 1, block selection or model selection."""
    base = demo_run / "results" / "dcube"
    metrics = pd.read_csv(base / "metrics.tsv", sep="\t")
    assert set(metrics.protocol) == {"official", "clean"} and set(metrics.model) == {"cnn", "dcube"}
    assert set(metrics.scenario) == {"full", "minority0.1"}
    for table in ("main", "imbalance", "limited", "blocks", "synthetic_quality"):
        assert (base / "tables" / f"{table}.md").read_text().startswith("### "), table
    for figure in ("metric_vs_synthetic.png", "metric_vs_imbalance.png", "samples.png"):
        assert (base / "figures" / figure).stat().st_size > 1000
    # Both classifiers learn, the minority scenario costs the minority class recall, and the
    # real-data CNN recognises every class's synthetic images (medaug/<paper>/claims.py).
    assert len(pd.read_csv(base / "tables" / "synthetic_quality.csv")) == 3
    assert not failures(demo_run, demo_claims("dcube"))

    test_ids = set(json.loads((base / "pancreas" / "splits.json").read_text())["folds"][0]["test"])
    for scenario in ("full", "minority0.1"):
        meta = json.loads((base / "pancreas" / scenario / "generator" / "meta.json").read_text())
        assert meta["training_case_ids"] and not set(meta["training_case_ids"]) & test_ids
        blocks = json.loads((base / "pancreas" / scenario / "blocks.json").read_text())
        assert blocks["training_images"] == len(meta["training_case_ids"])
    for record in (base / "pancreas").glob("*/classifier/*/*/*/training.json"):
        used = json.loads(record.read_text())
        assert not set(used["train_case_ids"] + used["val_case_ids"]) & test_ids, record


def test_demo_figures_have_no_layout_problems(demo_run):
    """Each report job logs a warning per overlapping text or doubled legend entry of a figure
    it saves (medaug.report.figures.save); the demo's, on every dataset, log none."""
    logs = {path.name: path.read_text() for path in (demo_run / "logs").glob("*_report.log")}
    assert set(logs) == {"diffboost_report.log", "diffmix_report.log", "dcube_report.log"}
    for name, text in logs.items():
        assert "medaug.report.figures" not in text, (name, text)


def test_demo_writes_the_cost_summary(demo_run):
    summary = pd.read_csv(demo_run / "results" / "benchmarks" / "summary.tsv", sep="\t")
    assert {"make_demo_dataset", "prepare_dataset", "make_splits", "all rules"} <= set(summary.rule)
    assert (summary.total_wall_s > 0).all() and (summary.peak_rss_mb > 0).all()


def test_bad_dataset_fails_with_the_file_named_and_no_output(demo_run, tmp_path):
    broken = tmp_path / "Task09_Spleen"
    shutil.copytree(demo_run / "resources" / "demo" / "Task09_Spleen", broken)
    label = next((broken / "labelsTr").iterdir())
    label.unlink()
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"]["spleen"]["root"] = str(broken)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(
        [
            "results/diffboost/spleen/splits.json",  # before --configfile, which takes several values
            "--cores",
            "1",
            "--directory",
            str(tmp_path),
            "--configfile",
            str(tmp_path / "config.yaml"),
        ],
        tmp_path,
        check=False,
    )
    assert result.returncode != 0
    log = (tmp_path / "logs" / "prepare_dataset" / "diffboost" / "spleen.log").read_text()
    assert f"{label}: missing label" in log
    assert "Traceback" not in log
    assert not (tmp_path / "results" / "diffboost" / "spleen" / "prepared").exists()


def test_config_typo_is_reported_readably(tmp_path):
    (tmp_path / "config.yaml").write_text("diffboost:\n  imagesize: 64\n")
    result = snakemake(
        ["-n", "--directory", str(tmp_path), "--configfile", str(tmp_path / "config.yaml")], tmp_path, check=False
    )
    assert result.returncode != 0
    assert "unknown key 'imagesize' (did you mean 'image_size'?)" in result.stdout + result.stderr


def test_a_stage_runs_standalone_with_the_rules_paths(demo_run, tmp_path):
    """A stage's console script resolves the same paths and settings as its rule."""
    dataset = tmp_path / "results" / "diffboost" / "spleen"
    dataset.mkdir(parents=True)
    (dataset / "prepared").symlink_to(demo_run / "results" / "diffboost" / "spleen" / "prepared")
    subprocess.run(
        [
            str(Path(sys.executable).parent / "medaug-make-splits"),
            "diffboost",
            "spleen",
            "--config",
            str(REPO / "config.yaml"),
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = dataset / "splits.json"
    assert out.read_text() == (demo_run / "results" / "diffboost" / "spleen" / "splits.json").read_text()
    assert Path(out).stat().st_size > 0
