"""D-Cube: the contrastive loss, the U-ViT and its hyper-features, the torchvision-layout
ResNets, the scenarios, block selection, the ancestral sampler, and every stage at the
paper's shapes for a step (no code path of config.paper.yaml runs first on a cluster)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from medaug.dcube import data, params
from medaug.dcube.classifier import DCubeClassifier, PlainClassifier, selection_score
from medaug.dcube.generator import block_statistics, contrastive_loss, draw_partners
from medaug.dcube.resnet import build_resnet, load_torchvision_weights
from medaug.dcube.uvit import UViT
from medaug.diffusion.sampling import ancestral_sample, linear_betas
from medaug.errors import MedaugError
from medaug.papers import validate_config
from medaug.splits import LeakageError

from .conftest import REPO


def test_contrastive_loss_pulls_same_class_pairs_and_pushes_others_past_the_margin():
    first = torch.zeros(2, 3, 4)
    second = torch.zeros(2, 3, 4)
    second[:, 0, 0] = 0.2  # squared distance 0.04 for both pairs
    same, different = torch.tensor([False, False]), torch.tensor([True, True])
    assert torch.allclose(contrastive_loss(first, second, same, 0.1), torch.tensor([0.04, 0.04]))
    assert torch.allclose(contrastive_loss(first, second, different, 0.1), torch.tensor([0.06, 0.06]))
    far = torch.zeros(2, 3, 4)
    far[:, 0, 0] = 0.5  # distance 0.25 >= margin: a different-class pair costs nothing
    assert contrastive_loss(first, far, different, 0.1).abs().sum() == 0

    # Gradient steps on the loss move the features as the paper intends.
    for is_different, sign in ((False, -1), (True, +1)):
        moved = second.clone().requires_grad_(True)
        labels = torch.tensor([is_different, is_different])
        contrastive_loss(first, moved, labels, 0.1).sum().backward()
        with torch.no_grad():
            after = moved - 0.5 * moved.grad
        before_d = (second - first).pow(2).sum()
        after_d = (after - first).pow(2).sum()
        assert np.sign((after_d - before_d).item()) == sign


def test_partners_are_of_the_same_class_about_half_the_time():
    labels = np.array([0] * 20 + [1] * 20 + [2] * 20)
    anchors = np.arange(60).repeat(20)
    partners = draw_partners(labels, anchors, 0.5, np.random.default_rng(0))
    same = labels[partners] == labels[anchors]
    assert 0.45 < same.mean() < 0.55
    only_one_class = draw_partners(np.zeros(5, dtype=int), np.arange(5), 0.0, np.random.default_rng(0))
    assert set(only_one_class) <= set(range(5))


def test_uvit_returns_noise_mid_feature_and_every_block():
    model = UViT(image_size=32, patch_size=4, embed_dim=32, depth=4, num_heads=4, num_classes=3)
    x, t, y = torch.randn(2, 1, 32, 32), torch.tensor([1, 999]), torch.tensor([0, 2])
    eps, mid = model(x, t, y, return_mid=True)
    assert eps.shape == x.shape and mid.shape == (2, 65, 32)
    blocks = model(x, t, None, return_blocks=True)
    assert len(blocks) == model.num_blocks == 5 and model.mid_index == 2
    assert torch.equal(blocks[2], model(x, t, None, return_mid=True)[1])
    assert not torch.allclose(model(x, t, y), model(x, t, torch.tensor([1, 1])))  # the class matters


def test_uvit_saves_and_loads_as_a_diffusers_style_folder(tmp_path):
    model = UViT(image_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=2)
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "diffusion_pytorch_model.safetensors"}
    loaded = UViT.from_pretrained(tmp_path)
    x, t = torch.randn(1, 1, 16, 16), torch.tensor([5])
    assert torch.equal(loaded(x, t, torch.tensor([1])), model.eval()(x, t, torch.tensor([1])))


@pytest.mark.parametrize(("blocks", "tokens"), [([6, 8, 9], 771), ([6], 257)])
def test_hyper_features_of_the_chosen_blocks_at_paper_shapes(blocks, tokens):
    uvit = UViT()  # the paper's: 128 px, patch 8, 512 wide, depth 12
    model = DCubeClassifier(uvit, blocks, num_classes=3, grid=16, guidance="resnet50", num_timesteps=1000)
    assert model.conv_channel.in_channels == tokens and model.conv_channel.out_channels == 256
    x, t = torch.randn(2, 1, 128, 128), torch.tensor([3, 500])
    with torch.no_grad():
        assert model.hyper_features(x, t).shape == (2, 512, 16, 16)
        assert model(x, t).shape == (2, 3)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {f"uvit.{name}" for name, _ in uvit.named_parameters()}


# torchvision's own figures: parameter counts and state-dict sizes of its ImageNet ResNets.
TORCHVISION_RESNETS = {"resnet18": (11_689_512, 122), "resnet34": (21_797_672, 218), "resnet50": (25_557_032, 320)}


@pytest.mark.parametrize("architecture", sorted(TORCHVISION_RESNETS))
def test_resnets_have_torchvisions_layout(architecture):
    model = build_resnet(architecture)
    parameters, entries = TORCHVISION_RESNETS[architecture]
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert len(model.state_dict()) == entries


def test_resnet50_keys_and_shapes_match_torchvision_and_its_weights_load(tmp_path):
    state = build_resnet("resnet50").state_dict()
    assert state["conv1.weight"].shape == (64, 3, 7, 7)
    assert state["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert state["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)  # V1.5: stride on the 3x3
    assert state["layer4.2.bn3.running_var"].shape == (2048,)
    assert state["fc.weight"].shape == (1000, 2048)
    torch.manual_seed(1)
    saved = build_resnet("resnet50").state_dict()
    torch.save(saved, tmp_path / "resnet50.pth")
    target = PlainClassifier("resnet50", num_classes=3)
    load_torchvision_weights(target.resnet, tmp_path / "resnet50.pth")
    assert torch.equal(target.resnet.layer3[1].conv2.weight, saved["layer3.1.conv2.weight"])
    assert target.resnet.fc.weight.shape == (3, 2048)  # the task's head, not ImageNet's
    torch.save(build_resnet("resnet18").state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(MedaugError, match="not torchvision weights of this ResNet"):
        load_torchvision_weights(target.resnet, tmp_path / "resnet18.pth")


def _table(labels: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(len(labels))],
            "label": [f"class{v}" for v in labels],
            "label_index": labels,
        }
    )


def test_scenarios_shrink_only_what_they_name():
    rows = _table([0] * 20 + [1] * 8 + [2] * 40)
    assert data.minority_class(rows, None) == 1 and data.minority_class(rows, "class2") == 2
    minority = data.apply_scenario(rows, "minority0.25", 1, seed=0)
    assert minority.label_index.value_counts().to_dict() == {0: 20, 1: 2, 2: 40}
    limited = data.apply_scenario(rows, "limited0.5", 1, seed=0)
    assert limited.label_index.value_counts().to_dict() == {0: 10, 1: 4, 2: 20}
    assert data.apply_scenario(rows, "limited0.01", 1, seed=0).label_index.value_counts().min() == 1
    assert data.apply_scenario(rows, "full", 1, seed=0).equals(rows)
    again = data.apply_scenario(rows, "minority0.25", 1, seed=0)
    assert again.case_id.tolist() == minority.case_id.tolist()
    with pytest.raises(ValueError, match="unknown scenario"):
        data.parse_scenario("half")
    config = validate_config({})
    assert params.scenarios(config) == [
        "full",
        "minority0.5",
        "minority0.25",
        "minority0.1",
        "limited0.5",
        "limited0.25",
        "limited0.1",
    ]


def test_no_test_image_can_be_chosen_for_training(tmp_path):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    table = _table([0, 1, 0, 1, 0, 1]).assign(patient_id=lambda t: t.case_id)
    table.to_csv(prepared / "images.tsv", sep="\t", index=False)
    splits = {"seed": 0, "folds": [{"train": ["c0", "c1", "c2"], "val": ["c3"], "test": ["c4", "c5"]}]}
    assert data.role_rows(prepared, splits, "train").case_id.tolist() == ["c0", "c1", "c2"]
    leaky = {"seed": 0, "folds": [{"train": ["c0", "c1", "c4"], "val": ["c3"], "test": ["c4", "c5"]}]}
    with pytest.raises(LeakageError, match="c4"):
        data.role_rows(prepared, leaky, "train")


def test_block_selection_prefers_the_blocks_that_separate_the_classes():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 10)
    noise = [rng.normal(size=(30, 8)) for _ in range(3)]
    separating = rng.normal(size=(30, 8)) + labels[:, None] * 2.0
    statistics = block_statistics([noise[0], separating, noise[1], noise[2]], labels)
    ranked = sorted(statistics, key=lambda row: row["median_p"])
    assert ranked[0]["block"] == 1 and ranked[0]["share_p_below_0.05"] == 1.0


def test_selection_score_is_the_official_criterion_on_one_scale():
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0, 0])
    expected = accuracy_score(labels, predicted) + sum(
        f(labels, predicted, average="macro", zero_division=1) for f in (recall_score, precision_score, f1_score)
    )
    assert selection_score(labels, predicted, 3) == pytest.approx(expected)
    never_predicted = np.array([0, 0, 0, 0, 0, 0, 0])
    expected = accuracy_score(labels, never_predicted) + sum(
        f(labels, never_predicted, average="macro", zero_division=1) for f in (recall_score, precision_score, f1_score)
    )
    assert selection_score(labels, never_predicted, 3) == pytest.approx(expected)


def test_ancestral_sampler_visits_every_timestep_from_the_last_to_one():
    betas = linear_betas(10, 1e-4, 0.02)
    visited = []

    def eps_fn(x, t):
        visited.append(int(t[0]))
        return torch.zeros_like(x)

    first = ancestral_sample(eps_fn, (2, 1, 4, 4), betas, torch.Generator().manual_seed(0))
    assert visited == list(range(9, 0, -1))  # T-1 .. 1: the official loop, 999 steps for T = 1000
    second = ancestral_sample(eps_fn, (2, 1, 4, 4), betas, torch.Generator().manual_seed(0))
    assert torch.equal(first, second) and first.abs().max() <= 1


# --- every stage at the paper's shapes ---------------------------------------------------------------


@pytest.fixture(scope="module")
def paper():
    from snakemake.utils import update_config

    merged = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(merged, yaml.safe_load((REPO / "config.paper.yaml").read_text()))
    return validate_config(merged)


def test_every_dcube_stage_runs_a_step_at_paper_shapes(paper, tmp_path, caplog):
    """128 px, the paper's U-ViT (depth 12, 512 wide), blocks [6, 8, 9], ResNet50 guidance
    and baseline, the 999-step ancestral sampler's code path, both protocols, the report."""
    from medaug.dcube import stages
    from medaug.dcube.classifier import classify
    from medaug.dcube.generator import select_blocks, synthesize, train_generator
    from medaug.dcube.quality import synthetic_quality
    from medaug.dcube.report import report
    from medaug.demo import write_demo_dataset
    from medaug.preparation import prepare_classification
    from medaug.splits import make_splits

    section = paper["dcube"]
    assert section["image_size"] == 128 and section["blocks"]["use"] == [6, 8, 9]
    demo = {
        **paper["demo"]["pancreas"],
        "train_per_class": {"BENIGN": 3, "MALIGNANT": 2, "NORMAL": 3},
        "test_per_class": {"BENIGN": 1, "MALIGNANT": 1, "NORMAL": 1},
    }
    root = write_demo_dataset(tmp_path / "DCube_pancreas", paper["seed"], demo)
    entry = {**paper["datasets"]["pancreas"], "root": str(root)}
    prepare_classification("pancreas", entry, tmp_path / "prepared", section["image_size"])
    split = params.split_settings(paper, "pancreas")
    (tmp_path / "splits.json").write_text(
        json.dumps(make_splits("pancreas", tmp_path / "prepared", "classification", split))
    )

    # Steps cut to one; everything else as config.paper.yaml has it.
    config = json.loads(json.dumps(paper))
    config["dcube"]["diffusion"]["epochs"] = 1
    config["dcube"]["classifier"]["epochs"] = 1
    config["dcube"]["synthesis"]["counts"] = [3]
    config["dcube"]["seeds"] = [0]
    config["dcube"]["datasets"] = ["pancreas"]
    config["dcube"]["scenarios"] = {"minority_fractions": [], "training_fractions": [], "minority_class": None}
    config["dcube"]["blocks"]["ablations"] = [[6]]
    w = {"dataset": "pancreas", "scenario": "full"}
    data_inputs = {"prepared": str(tmp_path / "prepared"), "splits": str(tmp_path / "splits.json")}

    def job(spec, wildcards, inputs, outputs, settings=None):
        from medaug.stage import Job

        return Job(inputs, outputs, settings if settings is not None else spec.settings(config, wildcards), wildcards)

    generator = tmp_path / "generator"
    settings = {**stages.GENERATOR.settings(config, w), "state_dir": str(tmp_path / "state")}
    summary = train_generator(job(stages.GENERATOR, w, data_inputs, {"model": str(generator)}, settings))
    assert summary["steps"] == 1
    meta = json.loads((generator / "meta.json").read_text())
    test_ids = set(json.loads((tmp_path / "splits.json").read_text())["folds"][0]["test"])
    assert meta["training_case_ids"] and not set(meta["training_case_ids"]) & test_ids
    assert json.loads((generator / "unet" / "config.json").read_text())["embed_dim"] == 512

    blocks = select_blocks(
        job(stages.BLOCKS, w, {**data_inputs, "model": str(generator)}, {"blocks": str(tmp_path / "blocks.json")})
    )
    assert blocks["chosen"] == [6, 8, 9] and len(blocks["statistics"]) == 13

    # The ancestral sampler's code path with a 3-step schedule (999 steps of the paper model
    # would take minutes on a CPU); the model, shapes and class balancing are the paper's.
    ws = {**w, "synthetic_count": "3"}
    sample_settings = stages.SYNTHESIS.settings(config, ws)
    assert sample_settings["sampler"] == "ddpm"
    sample_settings["schedule"] = {**sample_settings["schedule"], "num_train_timesteps": 3}
    synthetic = tmp_path / "synthetic"
    synthesize(job(stages.SYNTHESIS, ws, {"model": str(generator)}, {"synthetic": str(synthetic)}, sample_settings))
    pool = data.read_synthetic(synthetic)
    assert pool.images.shape == (3, 128, 128) and sorted(pool.labels) == [0, 1, 2]

    runs = []
    for model, count in (("cnn", 0), ("cnn", 3), ("dcube", 0), ("dcube", 3), ("dcube_blocks6", 0)):
        wc = {**w, "model": model, "synthetic_count": str(count), "seed": "0"}
        run_dir = tmp_path / "runs" / model / str(count)
        inputs = {**data_inputs, "generator": str(generator), "blocks": str(tmp_path / "blocks.json")}
        if count:
            inputs["synthetic"] = str(synthetic)
        outputs = {
            name: str(run_dir / file)
            for name, file in (
                ("predictions", "predictions.tsv"),
                ("record", "training.json"),
                ("weights", "classifier.safetensors"),
            )
        }
        record = classify(job(stages.CLASSIFY, wc, inputs, outputs))
        assert (
            record["synthetic_images"] == count
            and not set(record["train_case_ids"] + record["val_case_ids"]) & test_ids
        )
        predictions = pd.read_csv(outputs["predictions"], sep="\t")
        assert set(predictions.protocol) == {"official", "clean"} and len(predictions) == 6
        runs.append((wc, outputs))
    with open(runs[4][1]["record"]) as record:
        assert json.load(record)["blocks"] == [6]

    quality = tmp_path / "quality.json"
    wq = {**w, "synthetic_count": "3"}
    synthetic_quality(
        job(
            stages.QUALITY,
            wq,
            {**data_inputs, "synthetic": str(synthetic), "classifier": runs[0][1]["weights"]},
            {"quality": str(quality)},
        )
    )
    per_class = json.loads(quality.read_text())["per_class"]
    assert len(per_class) == 3 and all({"fid_real_halves", "kid_real_halves"} <= row.keys() for row in per_class)

    report_settings = {
        **params.report_settings(config),
        "runs": [{k: (int(v) if k in ("synthetic_count", "seed") else v) for k, v in wc.items()} for wc, _ in runs],
        "generators": [w],
        "quality": [{**w, "synthetic_count": 3}],
    }
    out = tmp_path / "report"
    caplog.set_level("WARNING", logger="medaug.report.figures")
    report(
        job(
            stages.REPORT,
            {},
            {
                "predictions": [o["predictions"] for _, o in runs],
                "blocks": [str(tmp_path / "blocks.json")],
                "quality": [str(quality)],
                "synthetic": [str(synthetic)],
                "prepared": [data_inputs["prepared"]],
                "splits": [data_inputs["splits"]],
            },
            {"metrics": str(out / "metrics.tsv"), "tables": str(out / "tables"), "figures": str(out / "figures")},
            report_settings,
        )
    )
    assert (out / "tables" / "main.md").read_text().startswith("### ")
    # Every table also as the HTML page the Snakemake report shows.
    for table in ("main", "imbalance", "limited", "blocks", "synthetic_quality", "block_selection"):
        page = (out / "tables" / f"{table}.html").read_text()
        assert "<table" in page, table
        if table not in ("synthetic_quality", "block_selection"):
            assert " ± " in page, table  # the Markdown's 'mean ± std' cells
    # Bottleneck features: not called FID, and shown beside their real-vs-real reference.
    quality_page = (out / "tables" / "synthetic_quality.html").read_text()
    assert "feature FD real vs real" in quality_page and "FID" not in quality_page.replace("Inception FID", "")
    for figure in ("metric_vs_synthetic.png", "metric_vs_imbalance.png", "samples.png"):
        assert (out / "figures" / figure).stat().st_size > 1000
    assert not [r.getMessage() for r in caplog.records if r.name == "medaug.report.figures"]  # no layout problem


def test_uvit_unpatchify_puts_each_token_back_on_its_patch():
    """The decoder's patch layout is einops' 'B (h w) (p1 p2 C) -> B C (h p1) (w p2)'."""
    model = UViT(image_size=8, patch_size=4, embed_dim=8, depth=2, num_heads=2, num_classes=2)
    side, p = 2, 4
    patches = torch.arange(side * side * p * p, dtype=torch.float32).reshape(1, side * side, p * p)
    with torch.no_grad():
        model.decoder_pred.weight.zero_()
        model.final_layer.weight.zero_()
        model.final_layer.weight[0, 0, 1, 1] = 1.0  # identity 3x3 convolution
        model.final_layer.bias.zero_()
    # The decoder's output (time token first, then one row of patch pixels per token) replaced by known values.
    model.decoder_pred.register_forward_hook(
        lambda _m, _i, out: torch.cat([out[:, :1], patches.expand(len(out), -1, -1)], dim=1)
    )
    image = model(torch.zeros(1, 1, 8, 8), torch.tensor([1]))[0, 0]
    for token in range(side * side):
        h, w = divmod(token, side)
        for p1 in range(p):
            for p2 in range(p):
                assert image[h * p + p1, w * p + p2] == patches[0, token, p1 * p + p2]


def _per_seed_runs(seeds: int) -> pd.DataFrame:
    """Per-run metrics of the clean protocol: 2 models x 3 synthetic counts x ``seeds`` seeds."""
    rng = np.random.default_rng(seeds)
    return pd.DataFrame(
        [
            {
                "dataset": "pancreas",
                "scenario": "full",
                "protocol": "clean",
                "model": model,
                "synthetic_count": count,
                "seed": seed,
                "accuracy": rng.uniform(0.4, 0.9),
                "macro_f1": rng.uniform(0.3, 0.9),
            }
            for model in ("cnn", "dcube")
            for count in (0, 50, 100)
            for seed in range(seeds)
        ]
    )


@pytest.mark.parametrize("seeds", [1, 3])
def test_line_figure_is_clean_and_has_error_bars_only_over_several_seeds(seeds, tmp_path, caplog):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection

    from medaug.dcube.report import _line_figure
    from medaug.report.figures import layout_problems

    path = tmp_path / "metric_vs_synthetic.png"
    with caplog.at_level("WARNING", logger="medaug.report.figures"):
        figure = _line_figure(
            _per_seed_runs(seeds), "synthetic_count", ["accuracy", "macro_f1"], "synthetic images added", path, "Clean"
        )
    assert path.stat().st_size > 1000 and path.with_suffix(".svg").exists()
    assert not [r for r in caplog.records if r.name == "medaug.report.figures"]  # save found no layout problem
    FigureCanvasAgg(figure)  # closing left it a canvas that cannot render; the artists are all there
    assert layout_problems(figure) == []
    assert len(figure.legends) == 1 and [t.get_text() for t in figure.legends[0].get_texts()] == ["cnn", "dcube"]
    panels = [axes for axes in figure.axes if axes.lines]
    assert len(panels) == 2 and all(axes.get_ylim() == (0, 100) for axes in panels)
    assert sorted(axes.get_title() for axes in panels) == ["pancreas: Accuracy %", "pancreas: F1 %"]
    bars = [c for axes in panels for c in axes.collections if isinstance(c, LineCollection)]
    assert bool(bars) == (seeds > 1)
    assert ("one seed" in figure._suptitle.get_text()) == (seeds == 1)
    # Values in %: the means (the marked lines; error-bar caps are other lines) lie in the data's range x 100.
    means = np.concatenate([line.get_ydata() for axes in panels for line in axes.lines if line.get_marker() == "o"])
    assert len(means) == 2 * 2 * 3 and means.min() >= 30 and means.max() <= 90


@pytest.mark.parametrize(
    ("extractor", "fd", "kd"),
    [
        ("Inception-v3 (FID literature)", "FID", "KID"),
        ("baseline classifier's bottleneck (not comparable to Inception FID)", "feature FD", "feature KD"),
    ],
)
def test_quality_table_names_its_distances_by_extractor_beside_the_real_vs_real_reference(extractor, fd, kd):
    from medaug.dcube.report import quality_cells

    row = {"dataset": "pancreas", "class": "BENIGN", "synthetic": 6, "feature_extractor": extractor}
    row |= {"real_images": 8, "synthetic_images": 2, "baseline_accuracy_on_synthetic": 0.5}
    row |= {"fid": 12.5, "kid": 0.25, "fid_real_halves": 3.0, "kid_real_halves": None}
    cells, title = quality_cells([row])
    expected = {f"{fd} synthetic vs real": "12.5", f"{fd} real vs real": "3", f"{kd} real vs real": "–"}
    assert {column: cells.loc[0, column] for column in expected} == expected
    assert f"{fd}/{kd}" in title
