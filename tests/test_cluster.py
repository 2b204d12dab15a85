"""`snakemake --profile slurm` against a real SLURM: a single-node cluster with accounting
and a fake GRES GPU per core (the `slurm_cluster` and `slurm_ci_run` fixtures in conftest.py)."""

import re
import subprocess
from collections import Counter

import pytest
import yaml

from medaug.diffboost.params import runs
from medaug.papers import load_config

from .conftest import CI_RUN_GUARD, REPO, SLURM_RUN_GUARD, SLURM_START_GUARD, SNAKEMAKE, result_tables

pytestmark = pytest.mark.workflow

GPU_RULES = {
    "finetune_controlnet",
    "sample_synthetic",
    "generator_quality",
    "train_segmenter",
    "nnunet_train",
    "dcube_train_generator",
    "dcube_sample",
    "dcube_classify",
    "diffmix_train_generator",
    "diffmix_sample",
    "diffmix_hovernet",
}


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry-run: rule -> number of jobs."""
    counts = {}
    for line in output.splitlines():
        if match := re.fullmatch(r"(\w+)\s+(\d+)", line.strip()):
            counts[match.group(1)] = int(match.group(2))
    return counts


PAPER_INPUTS = [
    *(f"datasets.{name}.root" for name in ("busi", "spleen", "prostate", "consep", "glysac", "pancreas")),
    "diffboost.controlnet.pretrained_model",
    "diffboost.conditions.hed_weights",
    "dcube.classifier.imagenet_weights",
]


def _overlay(path, values):
    path.write_text(yaml.safe_dump(values))
    return str(path)


@pytest.mark.parametrize("profile", [[], ["--profile", "slurm"]], ids=["plain", "profile"])
def test_the_paper_config_refuses_stand_ins_until_real_inputs_are_set(tmp_path, profile):
    """No GPU-days on generated data or random weights by a missed EDIT line: one config
    error lists every dataset root and weight to set; with real ones (small folders here)
    the paper-scale DAG plans."""
    command = [*SNAKEMAKE[:3], *profile, "-n", "--quiet", "rules", "--directory", str(tmp_path / "run")]
    command += ["--configfile", str(REPO / "config.paper.yaml")]
    refused = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "Traceback" not in output
    assert "config: demo.allow_stand_ins is false, so every dataset and pretrained weight must be real" in output
    listed = [line.split(": ")[1] for line in output.splitlines() if line.startswith("config: ")][1:]
    assert listed == PAPER_INPUTS
    if not profile:
        return  # planning once, through the profile as a cluster user does, is enough

    real = tmp_path / "real"
    roots = {}
    for name in ("busi", "spleen", "prostate", "consep", "glysac", "pancreas"):
        (real / name).mkdir(parents=True)
        roots[name] = {"root": str(real / name)}
    for folder in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (real / "sd15" / folder).mkdir(parents=True)
    for name in ("network-bsds500.pth", "resnet50-11ad3fa6.pth"):
        (real / name).write_bytes(b"")
    values = {
        "datasets": roots,
        "diffboost": {
            "controlnet": {"pretrained_model": str(real / "sd15")},
            "conditions": {"hed_weights": str(real / "network-bsds500.pth")},
        },
        "dcube": {"classifier": {"imagenet_weights": str(real / "resnet50-11ad3fa6.pth")}},
    }
    planned = subprocess.run(
        [*command, _overlay(tmp_path / "real.yaml", values)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "make_demo_dataset" not in job_counts(planned.stdout) and job_counts(planned.stdout)["total"] > 500


def test_profile_plans_the_paper_scale_dag_from_the_repository_root(tmp_path):
    # As typed by a user: `snakemake --profile slurm -n` in the checkout (the working
    # directory is moved aside only so that the test leaves the checkout untouched), with
    # the stand-ins allowed: a cluster set-up rehearsed on a fresh clone.
    rehearse = _overlay(tmp_path / "rehearse.yaml", {"demo": {"allow_stand_ins": True}})
    command = [*SNAKEMAKE[:3], "--profile", "slurm", "-n", "--quiet", "rules", "--directory", str(tmp_path)]
    result = subprocess.run(
        [*command, "--configfile", str(REPO / "config.paper.yaml"), rehearse],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    counts = job_counts(result.stdout)
    paper = load_config([REPO / "config.paper.yaml", rehearse])
    monai_arm = [path for path, labels in runs(paper) if labels["arm"] == "monai"]
    assert counts["finetune_controlnet"] == 3 * 3  # datasets x folds
    assert counts["sample_synthetic"] == 3 * 3 * 7  # x ratios
    assert counts["train_segmenter"] == len(monai_arm) > 100
    assert counts["nnunet_train"] == 3 * 3 * 2 * 3  # datasets x folds x protocols x ratios
    assert counts["dcube_train_generator"] == 2 * 7  # datasets x scenarios (full, 3 imbalanced, 3 limited)
    # datasets x (scenarios x models x synthetic counts x seeds + block ablations x seeds)
    assert counts["dcube_classify"] == 2 * (7 * 2 * 2 * 3 + 4 * 3)
    # datasets x (baseline + gradmix at ratios 0.5, 1 + diffmix at 0.5, 1, 2) x seeds
    assert counts["diffmix_hovernet"] == 2 * (1 + 2 + 3) * 3
    assert counts["diffmix_sample"] == 2 * 2 and counts["diffmix_train_generator"] == 2
    assert counts["total"] > 500

    # Each job's partition and CPUs as planned: GPU jobs on the GPU partition with their
    # family's threads (config.paper.yaml), CPU jobs on the CPU partition.
    detailed = subprocess.run(
        # --cores: a dry-run caps threads at the local cores; sbatch jobs are not capped.
        [*SNAKEMAKE[:3], "--profile", "slurm", "-n", "--cores", "64", "--directory", str(tmp_path)]
        + ["--configfile", str(REPO / "config.paper.yaml"), rehearse],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    planned = {}
    for block in detailed.stdout.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        partition = re.search(r"slurm_partition=(\w+)", block).group(1)
        threads = int(match.group(1)) if (match := re.search(r"^\s+threads: (\d+)$", block, re.M)) else 1
        planned[rule] = (partition, threads)
    threads = paper["threads"]
    assert planned["nnunet_train"] == ("gpu", threads["nnunet"])
    assert planned["nnunet_plan"] == ("cpu", threads["nnunet"])
    assert planned["train_segmenter"] == ("gpu", threads["downstream"])
    assert planned["finetune_controlnet"] == ("gpu", threads["diffusion"])
    assert {rule for rule, (partition, _) in planned.items() if partition == "gpu"} == GPU_RULES


def sacct(job_ids: list[str]) -> list[dict]:
    """Accounting records of ``job_ids``. Read from sacct, never scontrol: scontrol forgets
    a job MinJobAge (600 s here) after it ends, which a slow machine passes mid-test."""
    # SubmitLine (the sbatch command line) last: it is the one field that may hold the delimiter.
    fields = ["JobIDRaw", "State", "Account", "Partition", "AllocTRES", "Comment", "SubmitLine"]
    command = ["timeout", "-s", "KILL", "60", "sacct", "-X", "--parsable2", "--noheader", "--delimiter=|"]
    command += ["-j", ",".join(job_ids), f"--format={','.join(fields)}"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    return [dict(zip(fields, line.split("|", len(fields) - 1), strict=True)) for line in lines]


# Installing and starting SLURM, the local CI-size run and the SLURM run itself (fixtures);
# the SLURM run's own SIGKILL timeout is the bound that matters.
@pytest.mark.timeout(SLURM_START_GUARD + SLURM_RUN_GUARD + CI_RUN_GUARD)
def test_ci_demo_through_slurm_matches_a_local_run(slurm_ci_run, ci_run):
    workdir, output = slurm_ci_run
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", output)
    records = sacct(submitted)
    assert sorted(r["JobIDRaw"] for r in records) == sorted(submitted)
    assert {(r["State"], r["Account"]) for r in records} == {("COMPLETED", "ci")}

    # Every job that ran (each leaves a benchmark file) went through sbatch, and only
    # those; the comment the plugin sets names the rule.
    rules_in_sacct = Counter(re.match(r"rule_(\w+?)_wildcards", r["Comment"]).group(1) for r in records)
    benchmark_files = (workdir / "benchmarks").rglob("*.tsv")
    benchmarks = Counter(path.relative_to(workdir / "benchmarks").parts[0] for path in benchmark_files)
    assert rules_in_sacct == benchmarks
    assert set(rules_in_sacct) >= GPU_RULES
    for record in records:
        rule = re.match(r"rule_(\w+?)_wildcards", record["Comment"]).group(1)
        assert ("gres/gpu=1" in record["AllocTRES"]) == (rule in GPU_RULES), record
        # CPU jobs on the CPU partition, GPU jobs on the GPU one, each with its threads
        # (config key `threads`: 1 in the CI config) as its CPUs.
        assert record["Partition"] == ("gpu" if rule in GPU_RULES else "main"), record
        assert re.search(r"(^|,)cpu=1(,|$)", record["AllocTRES"]), record
        if rule in GPU_RULES:  # --gpus=1 (a per-job GPU request), not --gres
            assert "--gpus=1" in record["SubmitLine"] and "--gres" not in record["SubmitLine"], record

    assert result_tables(workdir) == result_tables(ci_run)
