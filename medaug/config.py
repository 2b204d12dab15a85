"""Configuration: validation against the JSON schema, defaults, readable errors.

Imported by the Snakefile, so it depends only on what Snakemake itself needs
(jsonschema, PyYAML).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Iterable
from pathlib import Path

import jsonschema
import yaml

from medaug import paths
from medaug.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"


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


def validate_config(
    config: dict, checks: Iterable[Callable[[dict], list[str]]] = (), schema: dict | None = None
) -> dict:
    """Return a validated copy of ``config`` with every default filled in.

    ``checks`` are the papers' cross-key checks (each returns its problems as lines). Raises
    ConfigError with one line per problem, each naming the key.
    """
    schema = schema if schema is not None else load_schema()
    config = copy.deepcopy(dict(config))
    validator = DefaultFillingValidator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("\n".join(_describe(e, schema) for e in errors))
    # Each problem once: a dataset that two papers read is named once.
    problems = list(dict.fromkeys(problem for check in checks for problem in check(config)))
    if problems:
        raise ConfigError("\n".join(problems))
    return config


def merge(base: dict, update: dict) -> dict:
    """``update`` laid over ``base`` key by key, recursively (as Snakemake merges config files)."""
    merged = dict(base)
    for key, value in update.items():
        merged[key] = (
            merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def load_config(paths: Iterable[str | Path], checks: Iterable[Callable[[dict], list[str]]] = ()) -> dict:
    """Config files read in order, each laid over the last, then validated."""
    config: dict = {}
    for path in paths:
        path = Path(path)
        try:
            config = merge(config, yaml.safe_load(path.read_text()) or {})
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the config file ({exc})") from None
    return validate_config(config, checks)


def dataset_problems(config: dict, paper: str, formats: Iterable[str]) -> list[str]:
    """Each dataset a paper runs on must be defined under ``datasets``, in a format it reads."""
    problems = []
    formats = tuple(formats)
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
        elif problem := root_problem(config, name):
            problems.append(problem)
    return problems


def root_problem(config: dict, name: str) -> str | None:
    """Why dataset ``name``'s root cannot be read, or None. A root under the demo folder is
    made by the workflow (``make_demo_dataset``) and need not exist yet."""
    root = str(config["datasets"][name]["root"])
    if paths.is_demo_data(root):
        return None
    return path_problem(f"datasets.{name}.root", root, f"the {name} dataset folder as downloaded", folder=True)


def duplicate_problems(config: dict, keys: Iterable[str]) -> list[str]:
    """Lists that mean a set must not repeat an entry: each entry names its own jobs and
    report rows, so a repeat plans the same outputs twice (or crashes the report)."""
    problems = []
    for key in keys:
        values = config
        for part in key.split("."):
            values = values[part]
        values = values or []  # null lists (e.g. run_folds) mean "all"
        repeated = list(dict.fromkeys(v for i, v in enumerate(values) if v in values[:i]))
        if repeated:
            problems.append(f"config: {key}: {', '.join(map(str, repeated))} listed more than once in {values}")
    return problems


def path_problem(key: str, value: str, expected: str, folder: bool, needs: Iterable[str] = ()) -> str | None:
    """Why the local path ``value`` of ``key`` cannot be used, or None. ``needs``: entries
    the folder must hold (a trailing "/" marks a sub-folder). Relative paths are read from
    the working directory, as the jobs read them (Snakemake's: the workflow folder)."""
    path = Path(value)
    where = f"'{value}'" + ("" if path.is_absolute() else f" (relative to {Path.cwd()})")
    if not path.exists():
        problem = "does not exist"
    elif folder != path.is_dir():
        problem = "is a file" if folder else "is a folder"
    else:
        missing = [n for n in needs if not ((path / n).is_dir() if n.endswith("/") else (path / n).is_file())]
        problem = f"has no {', '.join(missing)}" if missing else None
    return f"config: {key}: {where} {problem}; expected {expected}" if problem else None
