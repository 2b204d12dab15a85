"""Per-rule conda envs: every rule that runs code names the env of its tool family, each env
pins exact versions that agree with the venv `make env` installs, and each env holds every
package its rules' scripts import (medaug's own modules followed transitively). Conda cannot
run on the CI machine, so this is checked statically."""

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

FAMILIES = {"data", "diffusion", "segmentation", "nnunet", "report"}
CONDA_NAMES = {"torch": "pytorch"}  # PyPI distribution -> conda-forge package, where they differ
ENVS = {path.stem: yaml.safe_load(path.read_text()) for path in (REPO / "envs").glob("*.yaml")}
# nnunetv2's chain installs these; `make env` removes them (the torchvision trap), so their
# versions are checked against the lock, not the venv.
REMOVED_FROM_VENV = {"torchvision", "timm"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


LOCK = {
    normalized(line.split("==")[0]): line.split("==")[1].strip()
    for line in (REPO / "constraints.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
}


def rules_with_code() -> dict[str, dict]:
    """rule -> {"conda": env name or None, "script": path} for every rule with a script."""
    rules = {}
    for smk in (REPO / "rules").glob("*.smk"):
        for block in re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.M):
            name = re.match(r"rule (\w+):", block)
            script = re.search(r'^\s+script:\s*\n\s+"\.\./(scripts/[\w.]+)"', block, flags=re.M)
            if name and script:
                conda = re.search(r'^\s+conda:\s*\n\s+"\.\./envs/(\w+)\.yaml"', block, flags=re.M)
                rules[name.group(1)] = {"conda": conda and conda.group(1), "script": REPO / script.group(1)}
    return rules


def pins(env: dict) -> dict[str, str]:
    """package -> exact version of a conda env file (conda and pip entries)."""
    result = {}
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            for requirement in entry["pip"]:
                name, version = requirement.split("==")
                result[name.lower()] = version
        elif entry != "pip":
            name, _, version = entry.partition(" =")
            result[name] = version
    return result


def imported_modules(path: Path, seen: set[Path]) -> set[str]:
    """Top-level modules imported by ``path`` and, transitively, by the medaug modules it imports."""
    seen.add(path)
    modules = set()
    tree = ast.parse(path.read_text())
    # `try: import x / except ImportError:` marks an import the code can do without.
    optional = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.Try)
        and any(
            isinstance(handler.type, ast.Name) and handler.type.id in ("ImportError", "ModuleNotFoundError")
            for handler in node.handlers
        )
        for inner in node.body
    }
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] != "medaug":
                modules.add(name.split(".")[0])
                continue
            for candidate in (REPO / f"{name.replace('.', '/')}.py", REPO / name.replace(".", "/") / "__init__.py"):
                if candidate.is_file() and candidate not in seen:
                    modules |= imported_modules(candidate, seen)
    return modules


def test_every_rule_that_runs_code_names_an_env_of_its_tool_family():
    rules = rules_with_code()
    assert len(rules) >= 10
    assert {rule: info["conda"] for rule, info in rules.items() if info["conda"] not in FAMILIES} == {}
    assert set(ENVS) == FAMILIES


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_env_pins_exact_versions_that_agree_with_the_venv(name):
    env = ENVS[name]
    assert env["channels"] == ["conda-forge", "nodefaults"]
    for package, version in pins(env).items():
        assert re.fullmatch(r"\d+(\.\d+)+", version), f"envs/{name}.yaml: {package} is not pinned exactly"
        if package == "python":
            assert f"{sys.version_info.major}.{sys.version_info.minor}" == version
            continue
        distribution = {conda: pypi for pypi, conda in CONDA_NAMES.items()}.get(package, package)
        if distribution in REMOVED_FROM_VENV:
            locked = LOCK[normalized(distribution)]
            assert locked == version, f"envs/{name}.yaml pins {package} {version}, constraints.txt {locked}"
            continue
        installed = importlib.metadata.version(distribution).split("+")[0]
        assert installed == version, f"envs/{name}.yaml pins {package} {version}, the venv has {installed}"


@pytest.mark.parametrize("rule", sorted(rules_with_code()))
def test_env_holds_every_package_the_rules_code_imports(rule):
    info = rules_with_code()[rule]
    modules = imported_modules(info["script"], set()) - set(sys.stdlib_module_names) - {"_checkout", "snakemake"}
    distributions = importlib.metadata.packages_distributions()
    needed = set()
    for module in modules:
        for distribution in distributions.get(module, [module]):
            needed.add(CONDA_NAMES.get(distribution.lower(), distribution.lower()))
    missing = needed - set(pins(ENVS[info["conda"]]))
    assert not missing, f"rule {rule}: envs/{info['conda']}.yaml lacks {sorted(missing)}"


def test_nnunet_env_pins_everything_nnunetv2_pulls_in_and_takes_torchvision_from_conda():
    """Every package of nnunetv2's dependency tree (read from the installed metadata) is
    pinned in envs/nnunet.yaml at the lock's version, so a pip install there resolves nothing
    by itself; torchvision and timm are conda-forge packages built for the env's pytorch, so
    pip never pulls PyPI's CUDA-linked torchvision into it."""
    from packaging.requirements import Requirement

    env = ENVS["nnunet"]
    conda = {entry.partition(" =")[0] for entry in env["dependencies"] if isinstance(entry, str)}
    pip = next(entry["pip"] for entry in env["dependencies"] if isinstance(entry, dict))
    pinned = {normalized(name) for name in pins(env)} | {"torch"}  # conda's pytorch
    assert conda >= REMOVED_FROM_VENV and not REMOVED_FROM_VENV & {normalized(r.split("==")[0]) for r in pip}
    tree, stack = set(), ["nnunetv2"]
    while stack:
        name = normalized(stack.pop())
        if name in tree:
            continue
        tree.add(name)
        if name in REMOVED_FROM_VENV:  # not installed in the venv: no metadata to follow
            continue
        for requirement in map(Requirement, importlib.metadata.requires(name) or []):
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                stack.append(requirement.name)
    # The env's python brings setuptools.
    unpinned = tree - pinned - {"setuptools"}
    assert not unpinned, f"envs/nnunet.yaml does not pin {sorted(unpinned)}"
    assert len(tree) > 50
    for requirement in pip:
        name, version = requirement.split("==")
        assert LOCK[normalized(name)] == version, requirement
