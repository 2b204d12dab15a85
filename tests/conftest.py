import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medaug.config import validate_config
from medaug.demo import DEMO_DATASETS, write_demo_dataset

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The tests' models are tiny: intra-op threads gain nothing and, on a shared 2-core
    machine, spin each other down tenfold."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def snakemake(args: list[str], cwd: Path, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
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
    """Every DiffBoost table and the per-case metrics of a finished run, by relative path."""
    base = workdir / "results" / "diffboost"
    files = [base / "metrics.tsv", *sorted((base / "tables").iterdir())]
    return {str(path.relative_to(workdir)): path.read_bytes() for path in files}
