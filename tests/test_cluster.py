"""`snakemake --profile slurm` against a real SLURM: a single-node cluster with accounting
and one fake GRES GPU, started by tests/tools/start_slurm.sh and stopped by PID afterwards."""

import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml

from medaug.pipeline import diffboost_runs, load_config

from .conftest import CI_CONFIG, REPO, SNAKEMAKE, result_tables

pytestmark = pytest.mark.workflow

TOOLS = REPO / "tests" / "tools"
PROFILE = REPO / "slurm" / "config.v8+.yaml"
GPU_RULES = {"finetune_controlnet", "sample_synthetic", "train_segmenter", "nnunet_train"}


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry-run: rule -> number of jobs."""
    counts = {}
    for line in output.splitlines():
        if match := re.fullmatch(r"(\w+)\s+(\d+)", line.strip()):
            counts[match.group(1)] = int(match.group(2))
    return counts


def test_profile_plans_the_paper_scale_dag_from_the_repository_root(tmp_path):
    # As typed by a user: `snakemake --profile slurm -n` in the checkout (the working
    # directory is moved aside only so that the test leaves the checkout untouched).
    result = subprocess.run(
        [*SNAKEMAKE[:3], "--profile", "slurm", "-n", "--quiet", "rules", "--directory", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    counts = job_counts(result.stdout)
    paper = load_config(REPO / "config.paper.yaml")
    paper_arm = [path for path, labels in diffboost_runs(paper) if labels["arm"] == "paper"]
    assert counts["finetune_controlnet"] == 3 * 3  # datasets x folds
    assert counts["sample_synthetic"] == 3 * 3 * 7  # x ratios
    assert counts["train_segmenter"] == len(paper_arm) > 100
    assert counts["nnunet_train"] == 3 * 3 * 2 * 3  # datasets x folds x protocols x ratios
    assert counts["total"] > 300


@pytest.fixture(scope="session")
def slurm_cluster():
    if os.geteuid() != 0:
        pytest.skip("starting a local SLURM needs root (apt packages, system daemons)")
    start = subprocess.run(
        ["timeout", "-s", "KILL", "900", "bash", str(TOOLS / "start_slurm.sh"), "--fake-gpu"],
        capture_output=True,
        text=True,
    )
    try:
        assert start.returncode == 0, f"SLURM did not start:\n{start.stdout}\n{start.stderr}"
        yield
    finally:
        subprocess.run(["timeout", "-s", "KILL", "120", "bash", str(TOOLS / "stop_slurm.sh")], check=False)


def ci_overlay(tmp_path: Path) -> Path:
    """The test's overlay on the user profile: the same default resources with this
    cluster's partition and account, nothing else."""
    resources = yaml.safe_load(PROFILE.read_text())["default-resources"]
    overlay = {"default-resources": {**resources, "slurm_partition": "main", "slurm_account": "ci"}}
    changed = {key for key in resources if resources[key] != overlay["default-resources"][key]}
    assert changed <= {"slurm_partition", "slurm_account"}
    directory = tmp_path / "ci_overlay"
    directory.mkdir()
    (directory / "config.v8+.yaml").write_text(yaml.safe_dump(overlay))
    return directory


def sacct(job_ids: list[str]) -> list[dict]:
    fields = ["JobIDRaw", "State", "Account", "Partition", "AllocTRES", "Comment"]
    result = subprocess.run(
        ["timeout", "-s", "KILL", "30", "sacct", "-X", "--parsable2", "--noheader", "-j", ",".join(job_ids)]
        + [f"--format={','.join(fields)}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [dict(zip(fields, line.split("|"), strict=True)) for line in result.stdout.splitlines()]


def test_ci_demo_through_slurm_matches_a_local_run(slurm_cluster, ci_run, tmp_path):
    workdir = tmp_path / "slurm_run"
    workdir.mkdir()
    command = [*SNAKEMAKE[:3], "--profile", "slurm", "--profile", str(ci_overlay(tmp_path))]
    command += ["--directory", str(workdir), "--configfile", *CI_CONFIG]
    # A hung executor plugin must fail this test, not CI: SIGKILL after 20 minutes.
    result = subprocess.run(["timeout", "-s", "KILL", "1200", *command], cwd=REPO, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output

    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", output)
    records = sacct(submitted)
    assert sorted(r["JobIDRaw"] for r in records) == sorted(submitted)
    assert {(r["State"], r["Account"], r["Partition"]) for r in records} == {("COMPLETED", "ci", "main")}

    # Every job that ran (each leaves a benchmark file) went through sbatch, and only
    # those; the comment the plugin sets names the rule.
    rules_in_sacct = Counter(re.match(r"rule_(\w+?)_wildcards", r["Comment"]).group(1) for r in records)
    benchmark_files = (workdir / "benchmarks").rglob("*.tsv")
    benchmarks = Counter(path.relative_to(workdir / "benchmarks").parts[0] for path in benchmark_files)
    assert rules_in_sacct == benchmarks
    assert GPU_RULES & set(rules_in_sacct) == {"finetune_controlnet", "sample_synthetic", "train_segmenter"}
    for record in records:
        rule = re.match(r"rule_(\w+?)_wildcards", record["Comment"]).group(1)
        assert ("gres/gpu=1" in record["AllocTRES"]) == (rule in GPU_RULES), record
        if rule in GPU_RULES:  # --gpus=1 (a per-job GPU request), not --gres
            job = subprocess.run(
                ["timeout", "-s", "KILL", "30", "scontrol", "show", "job", record["JobIDRaw"]],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert "TresPerJob=gres:gpu:1" in job, job

    assert result_tables(workdir) == result_tables(ci_run)
