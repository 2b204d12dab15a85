"""What a change re-runs (read off the dry-run DAG of a finished run), determinism of a
whole run, and a training job killed mid-way that resumes on Snakemake's retry."""

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from medaug.diffusion.training import latest_checkpoint

from .conftest import (
    CI_CONFIG,
    CI_RUN_GUARD,
    REPO,
    SLURM_RUN_GUARD,
    SLURM_START_GUARD,
    SNAKEMAKE,
    result_tables,
    run_ci_demo,
)

pytestmark = pytest.mark.workflow

TRAINING_RULES = {"finetune_controlnet", "sample_synthetic", "train_segmenter", "nnunet_plan", "nnunet_train"}
REPORTING_RULES = {"diffboost_report", "summarize_benchmarks", "all"}


def planned_jobs(workdir: Path, *extra_args: str, snakefile: Path = REPO / "Snakefile") -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job a dry-run of ``workdir`` would run."""
    args = ["--snakefile", str(snakefile), "-n", "--directory", str(workdir), *extra_args]
    result = subprocess.run(SNAKEMAKE[:3] + args, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = []
    for line in result.stdout.splitlines():
        if match := re.fullmatch(r"(?:local)?rule (\w+):", line.strip()):
            jobs.append((match.group(1), {}))
        elif line.strip().startswith("wildcards:") and jobs:
            pairs = line.strip().removeprefix("wildcards:").split(",")
            jobs[-1][1].update(pair.strip().split("=", 1) for pair in pairs)
    return jobs


def overlay(tmp_path: Path, name: str, values: dict) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_a_finished_run_has_nothing_left_to_do(ci_run):
    assert planned_jobs(ci_run, "--configfile", *CI_CONFIG) == []


def test_a_larger_ratio_reuses_the_smaller_ratios_images(ci_run):
    base = ci_run / "results" / "diffboost" / "busi" / "fold0" / "synthetic"
    counts = json.loads((base / "ratio2" / "counts.json").read_text())
    assert counts["per_slice_min"] == counts["per_slice_max"] == 2 and counts["reused_images"] == counts["new_images"]


def test_changing_one_ratio_reruns_only_that_ratios_jobs(ci_run, tmp_path):
    # Ratio 2 becomes 3 (and with it the DiffBoost pool of the main table): ratio 1's
    # images and segmenter, the baseline and the trained ControlNet stay.
    change = overlay(tmp_path, "ratio", {"diffboost": {"sampling": {"ratios": [1, 3]}, "segmentation": {"ratio": 3}}})
    jobs = planned_jobs(ci_run, "--configfile", *CI_CONFIG, change)
    training = sorted((rule, tuple(sorted(w.items()))) for rule, w in jobs if rule in TRAINING_RULES)
    assert training == [
        ("sample_synthetic", (("dataset", "busi"), ("fold", "0"), ("ratio", "3"))),
        ("train_segmenter", (("dataset", "busi"), ("fold", "0"), ("seed", "3"), ("variant", "diffboost_r3"))),
    ]
    assert {rule for rule, _ in jobs} - TRAINING_RULES == REPORTING_RULES


def test_changing_the_merging_mask_retrains_only_the_diffboost_arms(ci_run, tmp_path):
    # The baseline segmenters, the generator-quality job and the nnU-Net arm never read it.
    change = overlay(tmp_path, "mask", {"diffboost": {"segmentation": {"patch_size": 16, "alpha": 0.5}}})
    jobs = planned_jobs(ci_run, "--configfile", *CI_CONFIG, change)
    retrained = sorted((rule, w.get("variant")) for rule, w in jobs if rule not in REPORTING_RULES)
    assert retrained == [("train_segmenter", "diffboost_r1"), ("train_segmenter", "diffboost_r2")]


def test_editing_a_table_script_reruns_no_training(ci_run, tmp_path):
    checkout = tmp_path / "checkout"
    shutil.copytree(
        REPO,
        checkout,
        ignore=shutil.ignore_patterns(".git", ".venv", "results", "resources", "logs", "benchmarks", ".snakemake"),
    )
    assert planned_jobs(ci_run, "--configfile", *CI_CONFIG, snakefile=checkout / "Snakefile") == []
    script = checkout / "scripts" / "diffboost_report.py"
    script.write_text(script.read_text() + "# an edit to the table script\n")
    jobs = planned_jobs(ci_run, "--configfile", *CI_CONFIG, snakefile=checkout / "Snakefile")
    assert {rule for rule, _ in jobs} == REPORTING_RULES


def test_adding_a_seed_adds_only_that_seeds_jobs(ci_run, tmp_path):
    change = overlay(tmp_path, "seed", {"diffboost": {"segmentation": {"seeds": [3, 4]}}})
    jobs = planned_jobs(ci_run, "--configfile", *CI_CONFIG, change)
    training = [(rule, w) for rule, w in jobs if rule not in REPORTING_RULES]
    assert sorted(w["variant"] for _, w in training) == ["baseline", "diffboost_r1", "diffboost_r2"]
    assert all(rule == "train_segmenter" and w["seed"] == "4" for rule, w in training)
    assert {rule for rule, _ in jobs} - {"train_segmenter"} == REPORTING_RULES


@pytest.fixture
def second_ci_run(request, tmp_path):
    """Another run of the CI-size demo: the SLURM run where the cluster tests run (it is a
    second run of the same config and seed), else a second local run."""
    if os.geteuid() == 0:
        return request.getfixturevalue("slurm_ci_run")[0]
    return run_ci_demo(tmp_path / "second")


# The second run may be the SLURM run, started here.
@pytest.mark.timeout(SLURM_START_GUARD + SLURM_RUN_GUARD + CI_RUN_GUARD)
def test_two_runs_give_byte_identical_tables(ci_run, second_ci_run):
    second = second_ci_run
    first_tables, second_tables = result_tables(ci_run), result_tables(second)
    assert len(first_tables) > 10 and first_tables.keys() == second_tables.keys()
    different = [name for name in first_tables if first_tables[name] != second_tables[name]]
    assert not different, f"tables differ between two runs of the same config: {different}"


def job_processes(script_name: str, workdir: Path) -> list[int]:
    """PIDs of the Snakemake script jobs named ``script_name`` running in ``workdir``."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if any(part.endswith(script_name.encode()) for part in cmdline) and (entry / "cwd").resolve() == workdir:
                pids.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return pids


def test_killed_training_job_resumes_from_its_newest_checkpoint_on_retry(ci_run, tmp_path):
    """SIGKILL the ControlNet job between checkpoints (as a SLURM time limit would end it);
    Snakemake's retry resumes from the newest checkpoint, so at most one interval is lost."""
    workdir = tmp_path / "run"
    shutil.copytree(ci_run, workdir, symlinks=True)
    model = workdir / "results" / "diffboost" / "busi" / "fold0" / "controlnet"
    state = model.with_name("controlnet_state")
    for path in (model, state):
        for sub in [path, *path.rglob("*")]:
            sub.chmod(0o755 if sub.is_dir() else 0o644)  # the model is write-protected
        shutil.rmtree(path)
    longer = overlay(tmp_path, "longer", {"diffboost": {"controlnet": {"max_steps": 60, "checkpointing_steps": 10}}})
    command = SNAKEMAKE + [str(model.relative_to(workdir)), "--cores", "1", "--retries", "1"]
    command += ["--directory", str(workdir), "--configfile", *CI_CONFIG, longer]
    with (tmp_path / "snakemake.log").open("w") as output:
        process = subprocess.Popen(command, cwd=workdir, stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while latest_checkpoint(state) is None:
                assert process.poll() is None, (tmp_path / "snakemake.log").read_text()
                assert time.monotonic() < deadline, "no checkpoint within 300 s"
                time.sleep(0.05)
            jobs = job_processes("finetune_controlnet.py", workdir)
            assert len(jobs) == 1, jobs
            os.kill(jobs[0], signal.SIGKILL)
            killed_at = int(latest_checkpoint(state).name.split("-")[1])
            assert process.wait(timeout=600) == 0, (tmp_path / "snakemake.log").read_text()
        finally:
            if process.poll() is None:
                process.kill()
    assert killed_at < 60
    log = (workdir / "logs" / "finetune_controlnet" / "busi" / "fold0.log").read_text()
    assert f"resuming from checkpoint-{killed_at}" in log
    assert "step 60/60" in log and (model / "controlnet").is_dir()


def test_repairing_one_file_inside_a_dataset_reruns_exactly_that_dataset(demo_root, tmp_path):
    """A file replaced inside a dataset, even by an older copy (as `cp -p` from a backup
    leaves it), reruns that dataset's preparation and what follows, and nothing else:
    Snakemake alone sees only the root folder's time stamp, which does not change."""
    import nibabel as nib
    import numpy as np

    data = tmp_path / "data"
    for folder in ("Task09_Spleen", "Task05_Prostate"):
        shutil.copytree(demo_root / folder, data / folder)
    roots = {"datasets": {"spleen": {"root": str(data / "Task09_Spleen")}}}
    roots["datasets"]["prostate"] = {"root": str(data / "Task05_Prostate")}
    datasets = {"datasets": ["spleen", "prostate"], "nnunet": {"datasets": []}}
    change = overlay(tmp_path, "roots", {**roots, "diffboost": datasets})
    workdir = tmp_path / "run"
    targets = [f"results/diffboost/{name}/splits.json" for name in ("spleen", "prostate")]
    # Targets before --configfile, which takes every argument after it.
    plan = [*targets, "--configfile", *CI_CONFIG, change]
    subprocess.run([*SNAKEMAKE, "--cores", "2", "--directory", str(workdir), *plan], check=True, timeout=900)
    assert planned_jobs(workdir, *plan) == []

    label = sorted((data / "Task09_Spleen" / "labelsTr").glob("*.nii.gz"))[0]
    before = os.stat(label)
    image = nib.load(label)
    mirrored = np.ascontiguousarray(np.asanyarray(image.dataobj)[::-1])
    nib.save(nib.Nifti1Image(mirrored, image.affine, image.header), label)
    os.utime(label, ns=(before.st_atime_ns - 86_400 * 10**9, before.st_mtime_ns - 86_400 * 10**9))

    jobs = planned_jobs(workdir, *plan)
    assert sorted((rule, w.get("dataset")) for rule, w in jobs) == [
        ("make_splits", "spleen"),
        ("prepare_dataset", "spleen"),
    ]

    # A dangling link inside the other dataset: every call still plans, that dataset's
    # jobs are added to the spleen's, and running them names the link in one line.
    link = data / "Task05_Prostate" / "imagesTr" / "prostate_99.nii.gz"
    link.symlink_to(data / "gone.nii.gz")
    jobs = planned_jobs(workdir, *plan)
    assert sorted((rule, w.get("dataset")) for rule, w in jobs if w.get("dataset") == "prostate") == [
        ("make_splits", "prostate"),
        ("prepare_dataset", "prostate"),
    ]
    run = [*SNAKEMAKE, "--cores", "2", "--directory", str(workdir), *plan]
    result = subprocess.run(run, capture_output=True, text=True, timeout=900)
    assert result.returncode != 0
    assert f"{link}: broken symbolic link (points to {data / 'gone.nii.gz'})" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
