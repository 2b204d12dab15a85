"""Configuration: validation against the JSON schema, defaults, readable errors.

Imported by the Snakefile, so it depends only on what Snakemake itself needs
(jsonschema, PyYAML).
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path

import jsonschema
import yaml

from medaug.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"

SEGMENTATION_FORMATS = ("busi", "msd")
NUCLEI_FORMATS = ("consep", "glysac")
CLASSIFICATION_FORMATS = ("class_tree", "busi")
PAPER_FORMATS = {
    "diffboost": SEGMENTATION_FORMATS,
    "diffmix": NUCLEI_FORMATS,
    "dcube": CLASSIFICATION_FORMATS,
}


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    return yaml.safe_load(Path(path).read_text())


def _with_defaults(validator_class):
    """Extend a validator so that validating also fills in schema defaults."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


DefaultFillingValidator = _with_defaults(jsonschema.Draft202012Validator)


def _subschema(schema: dict, path: list) -> dict | None:
    """The schema node that documents ``path`` (for the description in messages)."""
    node = schema
    for key in path:
        if "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        if isinstance(key, str) and key in node.get("properties", {}):
            node = node["properties"][key]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        elif "items" in node:
            node = node["items"]
        else:
            return None
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _describe(error: jsonschema.ValidationError, schema: dict) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(known))
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        return f"config: {where}: unknown key {', '.join(hints)}; allowed keys: {', '.join(known)}"
    message = f"config: {where}: {error.message}"
    node = _subschema(schema, list(error.absolute_path))
    if node and "description" in node:
        description = " ".join(node["description"].split())
        message += f" -- {description}"
    return message


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Return a validated copy of ``config`` with every default filled in.

    Raises ConfigError with one line per problem, each naming the key.
    """
    schema = schema if schema is not None else load_schema()
    config = copy.deepcopy(dict(config))
    validator = DefaultFillingValidator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("\n".join(_describe(e, schema) for e in errors))
    _check_references(config)
    return config


def _check_references(config: dict) -> None:
    problems = []
    for paper, formats in PAPER_FORMATS.items():
        for name in config[paper]["datasets"]:
            if name not in config["datasets"]:
                problems.append(
                    f"config: {paper}.datasets: '{name}' is not defined under datasets "
                    f"(defined: {', '.join(config['datasets'])})"
                )
            elif config["datasets"][name]["format"] not in formats:
                problems.append(
                    f"config: {paper}.datasets: '{name}' has format "
                    f"'{config['datasets'][name]['format']}', but {paper} needs one of {', '.join(formats)}"
                )
    diffboost = config["diffboost"]
    ratios = diffboost["sampling"]["ratios"]
    seg_ratio = diffboost["segmentation"]["ratio"]
    if seg_ratio not in ratios:
        problems.append(f"config: diffboost.segmentation.ratio: {seg_ratio} is not in sampling.ratios {ratios}")
    for ratio in diffboost["nnunet"]["ratios"]:
        if ratio and ratio not in ratios:
            problems.append(f"config: diffboost.nnunet.ratios: {ratio} is neither 0 nor in sampling.ratios {ratios}")
    for key in ("ablation_datasets",):
        for name in diffboost["segmentation"][key]:
            if name not in diffboost["datasets"]:
                problems.append(f"config: diffboost.segmentation.{key}: '{name}' is not in diffboost.datasets")
    for name in diffboost["nnunet"]["datasets"]:
        if name not in diffboost["datasets"]:
            problems.append(f"config: diffboost.nnunet.datasets: '{name}' is not in diffboost.datasets")
    for fold in (diffboost["run_folds"] or []) + diffboost["nnunet"]["folds"]:
        if fold >= diffboost["folds"]:
            problems.append(f"config: diffboost: fold {fold} does not exist with folds: {diffboost['folds']}")
    low, high = config["diffboost"]["clip_percentiles"]
    if not low < high:
        problems.append(f"config: diffboost.clip_percentiles: {low} must be below {high}")
    if problems:
        raise ConfigError("\n".join(problems))
