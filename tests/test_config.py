import copy

import pytest
import yaml

from medaug.config import load_schema
from medaug.diffboost.params import controlnet_settings
from medaug.errors import ConfigError
from medaug.papers import validate_config

from .conftest import REPO


def _walk(node, path=""):
    """Yield (path, schema node) for every documented key."""
    for name, sub in node.get("properties", {}).items():
        yield f"{path}.{name}".lstrip("."), sub
        yield from _walk(sub, f"{path}.{name}")


def test_every_schema_key_has_description_and_default():
    schema = load_schema()
    nodes = list(_walk(schema)) + list(_walk(schema["$defs"]["dataset"], "datasets.<name>"))
    assert len(nodes) > 40
    for path, node in nodes:
        assert node.get("description"), f"{path} has no description"
        assert "default" in node, f"{path} has no default"


def test_defaults_are_the_papers_hyper_parameters():
    diffboost = validate_config({})["diffboost"]
    assert diffboost["image_size"] == 384 and diffboost["folds"] == 3 and diffboost["positive_slice_min_pixels"] == 20
    assert diffboost["prompts"] == {"busi": "Breast, Ultrasound", "spleen": "Spleen, CT", "prostate": "Prostate, MRI"}
    controlnet, sampling, seg = diffboost["controlnet"], diffboost["sampling"], diffboost["segmentation"]
    assert (controlnet["learning_rate"], controlnet["batch_size"], controlnet["train_unet"]) == (1e-6, 32, False)
    assert controlnet["epochs"] == {"busi": 1600, "spleen": 400, "prostate": 400}
    assert (controlnet["rotation_degrees"], controlnet["zoom_range"]) == (20, [0.75, 1.05])
    assert (sampling["ddim_steps"], sampling["guidance_scale"], sampling["seed"]) == (20, 9.0, 1)
    assert sampling["ratios"] == [3, 5, 10, 20, 30, 40, 50] and sampling["prompt_weights"] == [0.045, 0.005, 0.95]
    assert seg["architecture"] == "AttentionUnet" and seg["channels"] == [16, 32, 64, 128, 128, 256]
    assert (seg["epochs"], seg["batch_size"], seg["learning_rate"], seg["seeds"]) == (100, 8, 1e-3, [3])
    assert (seg["ratio"], seg["patch_size"], seg["alpha"]) == (50, 64, 0.6)


def test_config_yaml_is_valid_and_only_shrinks_the_demo():
    shipped = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    defaults = validate_config({})
    assert shipped["datasets"] == defaults["datasets"]
    assert shipped["diffboost"]["image_size"] < defaults["diffboost"]["image_size"]
    assert shipped["diffboost"]["prompts"] == defaults["diffboost"]["prompts"]


def test_unknown_key_names_the_key_and_suggests_the_right_one():
    with pytest.raises(ConfigError) as error:
        validate_config({"diffboost": {"imagesize": 64}})
    assert "diffboost: unknown key 'imagesize' (did you mean 'image_size'?)" in str(error.value)


def test_wrong_type_names_the_key_and_what_it_means():
    with pytest.raises(ConfigError) as error:
        validate_config({"diffboost": {"image_size": "big"}})
    message = str(error.value)
    assert message.startswith("config: diffboost.image_size: 'big' is not of type 'integer'")
    assert "Side of the square 2D slices" in message


def test_dataset_entry_errors_name_the_dataset():
    with pytest.raises(ConfigError, match=r"datasets\.spleen\.format: 'nifti' is not one of"):
        validate_config({"datasets": {"spleen": {"format": "nifti", "root": "x"}}, "diffboost": {"datasets": []}})


def test_paper_must_reference_defined_dataset_of_the_right_format():
    with pytest.raises(ConfigError, match="'liver' is not defined under datasets"):
        validate_config({"diffboost": {"datasets": ["liver"]}})
    with pytest.raises(ConfigError, match="'consep' has format 'consep', but diffboost needs one of busi, msd"):
        validate_config({"diffboost": {"datasets": ["consep"]}})


def test_controlnet_epochs_come_from_the_schema_or_an_error_never_a_code_default():
    epochs = {"busi": 10, "spleen": 10}  # no prostate
    with pytest.raises(ConfigError, match="diffboost.controlnet.epochs: no entry for dataset 'prostate'"):
        validate_config({"diffboost": {"controlnet": {"epochs": epochs}}})
    fixed_steps = validate_config({"diffboost": {"controlnet": {"epochs": epochs, "max_steps": 5}}})
    assert controlnet_settings(fixed_steps, "prostate")["epochs"] is None
    assert controlnet_settings(validate_config({}), "busi")["epochs"] == 1600


def test_defaults_fill_nested_keys():
    config = validate_config({"diffboost": {"folds": 5}})
    assert config["diffboost"]["folds"] == 5
    assert config["diffboost"]["image_size"] == 384
    assert config["datasets"]["prostate"]["channel"] == "T2"
    assert config["datasets"]["spleen"]["channel"] is None


def test_paper_config_sets_back_every_value_the_demo_shrinks():
    """`--profile slurm` reads config.paper.yaml on top of config.yaml: the result must be the
    schema's defaults (the papers' values) with no demo value left behind."""
    from snakemake.utils import update_config

    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    paper = yaml.safe_load((REPO / "config.paper.yaml").read_text())
    merged = copy.deepcopy(demo)
    update_config(merged, paper)  # as Snakemake merges --configfile over the Snakefile's configfile
    as_run = validate_config(merged)
    assert as_run == validate_config(paper)
    defaults = validate_config({})
    assert {k: v for k, v in as_run.items() if k != "demo"} == {k: v for k, v in defaults.items() if k != "demo"}
    assert as_run["demo"]["busi"]["images_per_class"] == {"benign": 437, "malignant": 210, "normal": 133}


def _demo_with(**sections) -> dict:
    """config.yaml with diffboost keys overridden, per section ("top": diffboost itself)."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for section, keys in sections.items():
        target = config["diffboost"] if section == "top" else config["diffboost"].setdefault(section, {})
        target.update(keys)
    return config


def _problem(config: dict) -> str:
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    return str(error.value)


@pytest.mark.parametrize(
    ("image_size", "segmentation", "architecture", "rule"),
    [
        (36, {}, "AttentionUnet", "a multiple of the total stride 8 of segmentation.strides [2, 2, 2]"),
        (40, {"architecture": "UNETR"}, "UNETR", "a multiple of 16"),
        (32, {"ablation_architectures": ["SwinUNETR"]}, "SwinUNETR", "a multiple of 32, at least 64"),
        # 16 px / 16 leaves a 1-pixel bottleneck, which UNet's instance norm cannot train on
        (16, {"architecture": "UNet", "strides": [2, 2, 2, 2], "channels": [4, 8, 16, 32, 64]}, "UNet", "at least 32"),
    ],
)
def test_image_size_must_fit_every_segmenter_built(image_size, segmentation, architecture, rule):
    message = _problem(_demo_with(top={"image_size": image_size}, segmentation=segmentation))
    key = "config: diffboost.image_size"
    assert f"{key}: {image_size} does not fit segmentation architecture {architecture}: " in message
    assert rule in message


def test_segmenter_channels_and_strides_must_pair_up():
    mismatched = {"channels": [8, 16, 32, 64], "strides": [2, 2], "ablation_architectures": ["UNet"]}
    config = _demo_with(segmentation=mismatched)
    assert "config: diffboost.segmentation.strides: 2 strides for 4 channels; AttentionUnet, UNet need" in _problem(
        config
    )
    # Unused by UNETR: no error when only UNETR is built.
    only_unetr = {"channels": [8, 16, 32, 64], "strides": [2, 2], "architecture": "UNETR", "ablation_datasets": []}
    validate_config(_demo_with(segmentation=only_unetr))


def test_tiny_model_widths_must_fit_its_norms():
    config = _demo_with(controlnet={"tiny_model": {"block_out_channels": [32, 60], "norm_num_groups": 8}})
    assert "config: diffboost.controlnet.tiny_model.norm_num_groups: 8 does not divide block_out_channels [60]" in (
        _problem(config)
    )
    config = _demo_with(controlnet={"tiny_model": {"text_hidden_size": 17}})
    assert "config: diffboost.controlnet.tiny_model.text_hidden_size: 17 is not divisible" in _problem(config)


def test_pretrained_model_must_be_a_diffusers_stable_diffusion_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths are read from the working directory
    (tmp_path / "weights.ckpt").write_bytes(b"")
    sd = tmp_path / "sd15"
    for name in ("unet", "vae", "text_encoder"):
        (sd / name).mkdir(parents=True)
    key = "config: diffboost.controlnet.pretrained_model"
    message = _problem(_demo_with(controlnet={"pretrained_model": "missing"}))
    assert f"{key}: 'missing' (relative to {tmp_path}) does not exist" in message
    assert "is a file" in _problem(_demo_with(controlnet={"pretrained_model": "weights.ckpt"}))
    assert f"{key}: 'sd15' (relative to {tmp_path}) has no tokenizer/, scheduler/" in _problem(
        _demo_with(controlnet={"pretrained_model": "sd15"})
    )
    for name in ("tokenizer", "scheduler"):
        (sd / name).mkdir()
    validate_config(_demo_with(controlnet={"pretrained_model": "sd15"}))
    (tmp_path / "cn").mkdir()
    message = _problem(_demo_with(controlnet={"pretrained_model": "sd15", "pretrained_controlnet": "cn"}))
    assert "config: diffboost.controlnet.pretrained_controlnet: 'cn'" in message and "has no config.json" in message
    message = _problem(_demo_with(controlnet={"pretrained_controlnet": "cn"}))
    assert "config: diffboost.controlnet.pretrained_controlnet: set, but only used with pretrained_model" in message
    message = _problem(_demo_with(conditions={"hed_weights": str(sd)}))
    assert f"config: diffboost.conditions.hed_weights: '{sd}' is a folder" in message
    message = _problem(_demo_with(quality={"fid_extractor": "inception.pt"}))
    assert f"config: diffboost.quality.fid_extractor: 'inception.pt' (relative to {tmp_path}) does not exist" in message


def test_augmentation_phrases_file_must_exist_and_hold_a_phrase(tmp_path):
    key = "config: diffboost.sampling.augmentation_phrases_file"
    missing = tmp_path / "phrases.txt"
    assert f"{key}: '{missing}' does not exist" in _problem(
        _demo_with(sampling={"augmentation_phrases_file": str(missing)})
    )
    missing.write_text("\n  \n")
    assert f"{key}: '{missing}' is empty" in _problem(_demo_with(sampling={"augmentation_phrases_file": str(missing)}))
    missing.write_text("a bright lesion\n")
    validate_config(_demo_with(sampling={"augmentation_phrases_file": str(missing)}))


@pytest.mark.parametrize(
    ("section", "keys", "expected"),
    [
        ("nnunet", {"ratios": [0, 2, 2]}, "nnunet.ratios: 2 listed more than once in [0, 2, 2]"),
        ("sampling", {"ratios": [1, 2, 1]}, "sampling.ratios: 1 listed more than once"),
        ("segmentation", {"seeds": [3, 3]}, "segmentation.seeds: 3 listed more than once"),
        ("segmentation", {"ablation_architectures": ["UNet", "UNet"]}, "segmentation.ablation_architectures: UNet"),
        ("top", {"run_folds": [0, 0]}, "run_folds: 0 listed more than once"),
    ],
)
def test_lists_that_mean_sets_reject_duplicates(section, keys, expected):
    assert f"config: diffboost.{expected}" in _problem(_demo_with(**{section: keys}))


@pytest.mark.parametrize("dataset", ["busi", "spleen", "prostate"])
def test_one_dataset_runs_without_editing_unrelated_lists(dataset):
    # The ablation and nnU-Net lists default to the datasets chosen: DiffBoost on one dataset
    # is one key, and the nnU-Net arm and the ablations (prostate's, as in the paper) follow.
    from medaug.diffboost.params import ablation_datasets, nnunet_datasets, runs

    config = validate_config({"diffboost": {"datasets": [dataset]}})
    assert nnunet_datasets(config) == [dataset]
    assert ablation_datasets(config) == ([dataset] if dataset == "prostate" else [])
    scored = {labels["dataset"] for _, labels in runs(config)}
    assert scored == {dataset}
    ablated = {labels["variant"] for _, labels in runs(config) if "patch" in labels["variant"]}
    assert bool(ablated) == (dataset == "prostate")
    # An explicit list still names what is not chosen.
    with pytest.raises(ConfigError, match="diffboost.nnunet.datasets: 'spleen' is not in diffboost.datasets"):
        validate_config({"diffboost": {"datasets": ["busi"], "nnunet": {"datasets": ["spleen"]}}})


def test_a_missing_dataset_root_is_a_config_error_naming_the_key(tmp_path):
    # Not Snakemake's MissingInputException for the first root only: every root, by its key.
    entries = {
        "busi": {"format": "busi", "root": str(tmp_path / "no_busi"), "modality": "US"},
        "spleen": {"format": "msd", "root": str(tmp_path / "a_file"), "modality": "CT"},
    }
    (tmp_path / "a_file").write_text("")
    message = _problem({"datasets": entries, "diffboost": {"datasets": ["busi", "spleen"]}, "dcube": {"datasets": []}})
    lines = message.splitlines()
    assert f"config: datasets.busi.root: '{tmp_path / 'no_busi'}' does not exist; expected" in lines[0]
    assert f"config: datasets.spleen.root: '{tmp_path / 'a_file'}' is a file; expected" in lines[1]
    assert len([line for line in lines if "datasets.busi.root" in line]) == 1  # DiffBoost and D-Cube read it


def test_the_real_tier_runs_diffboost_and_dcube_on_real_busi_only(tmp_path):
    """config.real.yaml (make real) on top of config.yaml: every DiffBoost and D-Cube stage on
    BUSI, both protocols, two seeds, nothing of DiffMix; and no run without the user's root."""
    from snakemake.utils import update_config

    from medaug.diffboost.params import nnunet_datasets

    merged = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(merged, yaml.safe_load((REPO / "config.real.yaml").read_text()))
    with pytest.raises(ConfigError, match=r"datasets\.busi\.root: 'SET-ME/Dataset_BUSI_with_GT'.* does not exist"):
        validate_config(copy.deepcopy(merged))
    update_config(merged, {"datasets": {"busi": {"format": "busi", "root": str(tmp_path), "modality": "US"}}})
    config = validate_config(merged)
    assert (config["diffboost"]["datasets"], config["dcube"]["datasets"], config["diffmix"]["datasets"]) == (
        ["busi"],
        ["busi"],
        [],
    )
    segmentation, nnunet = config["diffboost"]["segmentation"], config["diffboost"]["nnunet"]
    assert set(segmentation["protocols"]) == set(nnunet["protocols"]) == {"official", "clean"}
    assert len(segmentation["seeds"]) >= 2 and len(config["dcube"]["seeds"]) >= 2
    assert segmentation["ratio"] in config["diffboost"]["sampling"]["ratios"] and segmentation["ratio"] >= 1
    assert nnunet_datasets(config) == ["busi"] and nnunet["ratios"] == [0]
    assert config["diffboost"]["run_folds"] == [0] and config["dcube"]["synthesis"]["counts"]


def test_the_configuration_reference_is_the_schema():
    # docs/configuration.md is generated: `python -m medaug.config_reference > docs/configuration.md`.
    from medaug.config_reference import reference

    documented = (REPO / "docs" / "configuration.md").read_text()
    assert documented == reference(), "regenerate docs/configuration.md from the schema"
    keys = [path for path, _ in _walk(load_schema())]
    assert all(f"`{key}`" in documented for key in keys if not key.startswith("datasets"))
