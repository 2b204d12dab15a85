"""The three-paper layout: a shared core that imports no paper, one package per paper, one
registry, and scripts that only hand a Snakemake job to the stage of the same name."""

import ast
import importlib
import re
import subprocess

import yaml

from medaug.papers import PAPERS

from .conftest import REPO, SNAKEMAKE

PAPER_PACKAGES = {f"medaug.{name}" for name in PAPERS}
REGISTRY = "medaug.papers"


def module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path) -> set[str]:
    """Every module an import statement of ``path`` names (lazy imports inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def core_modules():
    for path in sorted((REPO / "medaug").rglob("*.py")):
        name = module_name(path)
        if name != REGISTRY and not any(name == p or name.startswith(p + ".") for p in PAPER_PACKAGES):
            yield name, path


def test_the_core_imports_no_paper_and_not_the_registry():
    offending = {
        name: sorted(m for m in imported(path) if m == REGISTRY or any(m.startswith(p) for p in PAPER_PACKAGES))
        for name, path in core_modules()
    }
    assert {name: found for name, found in offending.items() if found} == {}
    assert len(offending) > 20


def test_only_diffboost_and_the_registry_name_diffboost():
    mentions = {
        module_name(path)
        for path in (REPO / "medaug").rglob("*.py")
        if re.search("diffboost", path.read_text(), flags=re.I)
    }
    assert {m for m in mentions if not m.startswith("medaug.diffboost")} == {REGISTRY}


def test_each_paper_package_has_the_params_the_registry_reads():
    for name, params in PAPERS.items():
        assert name == params.PAPER
        assert params.REPRESENTATION in ("segmentation", "nuclei", "classification")
        assert params.FORMATS and params.PREPARE_KEYS
        for function in ("split_settings", "config_problems", "targets"):
            assert callable(getattr(params, function)), (name, function)


def test_every_script_runs_the_stage_of_its_rule():
    """scripts/<x>.py is an adapter of one stage, and that stage's spec names the rule."""
    checked = 0
    for smk in (REPO / "rules").glob("*.smk"):
        for block in re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.M):
            rule = re.match(r"rule (\w+):", block)
            script = re.search(r'^\s+script:\s*\n\s+"\.\./(scripts/[\w.]+)"', block, flags=re.M)
            if not (rule and script):
                continue
            source = (REPO / script.group(1)).read_text()
            module, stage = re.search(r"^from ([\w.]+) import (\w+)$", source, flags=re.M).groups()
            assert source.rstrip().endswith(f"{stage}.run_snakemake(snakemake)"), script.group(1)
            assert getattr(importlib.import_module(module), stage).spec.name == rule.group(1)
            checked += 1
    assert checked >= 10


def test_console_scripts_point_at_stage_entries():
    pyproject = (REPO / "pyproject.toml").read_text()
    scripts = dict(re.findall(r'^(medaug-[\w-]+) = "([\w.:]+)"$', pyproject, flags=re.M))
    assert len(scripts) >= 10
    for command, target in scripts.items():
        module, attribute = target.split(":")
        entry = getattr(importlib.import_module(module), attribute)
        assert entry.__self__.spec.name.replace("_", "-") == command.removeprefix("medaug-"), command


def test_the_samples_figure_uses_a_fold_that_runs(tmp_path):
    """run_folds: [1] must not plan fold-0 ControlNets for the report's figure alone."""
    (tmp_path / "folds.yaml").write_text(yaml.safe_dump({"diffboost": {"run_folds": [1], "nnunet": {"folds": [1]}}}))
    config = [str(REPO / "config.yaml"), str(tmp_path / "folds.yaml")]
    result = subprocess.run(
        [*SNAKEMAKE, "diffboost", "-n", "--directory", str(tmp_path), "--configfile", *config],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "/fold1/controlnet" in result.stdout and "/fold0/" not in result.stdout
