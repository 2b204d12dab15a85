import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import yaml

from medaug.caches import redirect_caches
from medaug.demo import DEMO_DATASETS, write_demo_dataset
from medaug.papers import validate_config

REPO = Path(__file__).resolve().parent.parent
# The tests' own caches (matplotlib, Snakemake, ...) stay in the project, as the pipeline's do.
redirect_caches(REPO / ".cache")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The tests' models are tiny: intra-op threads gain nothing and, on a shared 2-core
    machine, spin each other down tenfold."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Peak resident memory of each paper-shape stage (see peak_rss), printed at the end of the run.
PEAK_RSS: dict[str, tuple[float, float]] = {}


@contextmanager
def peak_rss(stage: str, interval: float = 0.05):
    """Record, under ``stage``, the peak memory of this process and its children (nnU-Net's
    workers) while the block runs, sampled every ``interval`` seconds, and how much it grew
    over the block's start. Memory is the proportional set size: pages shared between the
    processes (forked workers) count once, split among them. A measurement to read, not to
    assert: it includes what the test process already holds."""
    import psutil

    process = psutil.Process()

    def resident() -> int:
        total = 0
        for member in (process, *process.children(recursive=True)):
            with suppress(psutil.Error):  # a worker that just ended
                total += member.memory_full_info().pss
        return total

    start = resident()
    peak = [start]
    done = threading.Event()

    def sample():
        while not done.wait(interval):
            peak[0] = max(peak[0], resident())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        done.set()
        sampler.join()
        peak[0] = max(peak[0], resident())
        PEAK_RSS[stage] = (peak[0] / 2**20, (peak[0] - start) / 2**20)


def pytest_terminal_summary(terminalreporter):
    if PEAK_RSS:
        terminalreporter.section("peak memory (PSS) per paper-shape stage, this process and its children")
        for stage, (peak, grown) in PEAK_RSS.items():
            terminalreporter.write_line(f"{stage}: {peak:,.0f} MiB peak, {grown:+,.0f} MiB over the stage's start")


@pytest.fixture(scope="session")
def config():
    return validate_config({})


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory, config):
    """All six demo datasets, written once per test session."""
    root = tmp_path_factory.mktemp("demo")
    for folder, (key, _) in DEMO_DATASETS.items():
        write_demo_dataset(root / folder, config["seed"], config["demo"][key])
    return root


@pytest.fixture
def broken_copy(demo_root, tmp_path):
    """Copy one demo dataset so that a test can damage it."""

    def copy(folder: str) -> Path:
        target = tmp_path / folder
        shutil.copytree(demo_root / folder, target)
        return target

    return copy


def entry_for(config: dict, dataset: str, root: Path) -> dict:
    """The config entry of ``dataset`` pointed at ``root``."""
    return {**config["datasets"][dataset], "root": str(root)}


def tiny_unet(seed: int = 0):
    """A 16 px, 1-channel diffusers UNet2DModel small enough for CPU tests."""
    import torch
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )


# --- Snakemake runs shared by the workflow, rerun, determinism and cluster tests -------------------

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
CI_CONFIG = [str(REPO / "config.yaml"), str(REPO / "tests" / "config_ci.yaml")]


# Hang guards (seconds), each >= 3x the idle duration measured on 2 cores, so that the suite
# passes on a machine twice as slow: the CI-size run (about 3 min), the whole demo (about
# 15 min), the CI-size run through SLURM (about 5 min). A test's own pytest timeout covers
# the fixtures it is first to set up.
CI_RUN_GUARD = 1800
DEMO_RUN_GUARD = 2700
SLURM_RUN_GUARD = 2400
SLURM_START_GUARD = 900  # installing (apt) and starting the daemons


def snakemake(
    args: list[str], cwd: Path, check: bool = True, timeout: int = CI_RUN_GUARD
) -> subprocess.CompletedProcess:
    """Run Snakemake on this repository's workflow; on failure, raise with its output."""
    result = subprocess.run(SNAKEMAKE + args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def run_ci_demo(workdir: Path) -> Path:
    """The CI-size demo (config.yaml + tests/config_ci.yaml), run locally in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    snakemake(["--cores", "2", "--directory", str(workdir), "--configfile", *CI_CONFIG], workdir)
    return workdir


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory):
    """One finished local run of the CI-size demo, shared read-only by several tests."""
    return run_ci_demo(tmp_path_factory.mktemp("ci_run"))


def result_tables(workdir: Path) -> dict[str, bytes]:
    """Every paper's tables and, where it has them, per-run metrics of a finished run, by relative path."""
    files = []
    for paper in ("diffboost", "diffmix", "dcube"):
        base = workdir / "results" / paper
        files += [path for path in [base / "metrics.tsv"] if path.exists()] + sorted((base / "tables").iterdir())
    return {str(path.relative_to(workdir)): path.read_bytes() for path in files}


# --- a real local SLURM ----------------------------------------------------------------------------

TOOLS = REPO / "tests" / "tools"
PROFILE = REPO / "slurm" / "config.v8+.yaml"


@pytest.fixture(scope="session")
def slurm_cluster():
    """A single-node SLURM with accounting and one fake GRES GPU per core for the session,
    started by tests/tools/start_slurm.sh; the daemons it started are stopped by PID at the end."""
    if os.geteuid() != 0:
        pytest.skip("starting a local SLURM needs root (apt packages, system daemons)")
    start = subprocess.run(
        ["timeout", "-s", "KILL", str(SLURM_START_GUARD), "bash", str(TOOLS / "start_slurm.sh"), "--fake-gpu"],
        capture_output=True,
        text=True,
    )
    try:
        assert start.returncode == 0, f"SLURM did not start:\n{start.stdout}\n{start.stderr}"
        yield
    finally:
        subprocess.run(["timeout", "-s", "KILL", "120", "bash", str(TOOLS / "stop_slurm.sh")], check=False)


def ci_overlay(directory: Path) -> Path:
    """The tests' overlay on the user profile: the same resources with this cluster's
    partitions (main for CPU jobs, gpu for GPU jobs) and account, nothing else."""
    profile = yaml.safe_load(PROFILE.read_text())
    resources, per_rule = profile["default-resources"], profile["set-resources"]
    overlay = {
        "default-resources": {**resources, "slurm_partition": "main", "slurm_account": "ci"},
        "set-resources": {rule: {**values, "slurm_partition": "gpu"} for rule, values in per_rule.items()},
    }
    changed = {key for key in resources if resources[key] != overlay["default-resources"][key]}
    assert changed <= {"slurm_partition", "slurm_account"}
    assert all(set(values) == {"slurm_partition"} for values in per_rule.values())
    directory.mkdir()
    (directory / "config.v8+.yaml").write_text(yaml.safe_dump(overlay))
    return directory


@pytest.fixture(scope="session")
def slurm_ci_run(slurm_cluster, tmp_path_factory, request) -> tuple[Path, str]:
    """The CI-size demo run through `snakemake --profile slurm` as a user runs it, plus the
    overlay; returns its working directory and Snakemake's output.

    The local CI-size run (`ci_run`) goes on meanwhile: the executor's status checks back off
    to tens of seconds while a job runs, and the local jobs use the cores SLURM leaves idle."""
    workdir = tmp_path_factory.mktemp("slurm_run")
    command = [*SNAKEMAKE, "--profile", "slurm", "--profile", str(ci_overlay(workdir.with_name("ci_overlay")))]
    command += ["--directory", str(workdir), "--configfile", *CI_CONFIG]
    # A hung executor plugin must fail the tests, not CI.
    guard = ["timeout", "-s", "KILL", str(SLURM_RUN_GUARD)]
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            [*guard, *command], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            request.getfixturevalue("ci_run")
        except BaseException:
            os.killpg(process.pid, signal.SIGTERM)  # Snakemake cancels its SLURM jobs on SIGTERM
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
            raise
        returncode = process.wait()
        log.seek(0)
        output = log.read()
    assert returncode == 0, output
    return workdir, output
