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
