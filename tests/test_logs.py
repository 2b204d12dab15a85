"""A job's failure reaches its log: one line for a user error or a full disk, the
traceback for a bug; caches stay out of the user's home."""

import os
from pathlib import Path

import pytest

from medaug.caches import CACHE_VARIABLES, redirect_caches
from medaug.errors import DatasetError, OutputError
from medaug.io import atomic_output
from medaug.logs import run_job


def run_failing(job, log):
    with pytest.raises(SystemExit) as exit_info:
        run_job(job, log)
    assert exit_info.value.code == 1
    return log.read_text()


def test_a_user_error_is_one_line_in_the_log(tmp_path):
    def job():
        raise DatasetError(tmp_path / "case.nii.gz", "label orientation differs from the image's")

    text = run_failing(job, tmp_path / "job.log")
    assert "case.nii.gz: label orientation differs" in text and "Traceback" not in text


def test_any_other_error_reaches_the_log_with_its_traceback(tmp_path):
    def job():
        return {}["missing"]

    text = run_failing(job, tmp_path / "job.log")
    assert "job failed" in text and "Traceback" in text and "KeyError: 'missing'" in text


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to fill a disk")
def test_a_full_disk_names_the_output_and_leaves_nothing(tmp_path):
    target = tmp_path / "results" / "arrays.npz"

    def job():
        with atomic_output(target) as tmp, open("/dev/full", "wb") as full:
            tmp.write_bytes(b"partial")
            full.write(b"x" * 65536)  # writing to /dev/full fails with ENOSPC
            full.flush()

    with pytest.raises(OutputError, match="arrays.npz: no space left on device"):
        job()
    text = run_failing(job, tmp_path / "job.log")
    assert "arrays.npz: no space left on device" in text and "Traceback" not in text
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_a_killed_jobs_partial_output_is_swept_by_the_next_attempt(tmp_path):
    """Partials of this output left by a process of this host that is gone are removed; a
    live process's (another Snakemake refreshing the same file), another host's and another
    output's are left alone."""
    import socket
    import subprocess

    host = socket.gethostname()
    ended = subprocess.Popen(["true"])
    ended.wait()  # its pid now names no process
    target = tmp_path / "ratio2"
    stale = tmp_path / f".ratio2.partial-{host}-{ended.pid}"  # left by a job killed while writing
    (stale / "samples").mkdir(parents=True)
    (stale / "samples" / "k001.npy").write_bytes(b"half a pool")
    kept = [
        f".ratio2.partial-{host}-{os.getppid()}",  # a live process's
        f".ratio2.partial-elsewhere-{ended.pid}",  # another host's: cannot be checked
        f".ratio20.partial-{host}-{ended.pid}",  # another output's
    ]
    for name in kept:
        (tmp_path / name).mkdir()
    with atomic_output(target, directory=True) as tmp:
        assert tmp.name == f".ratio2.partial-{host}-{os.getpid()}"
        (tmp / "done").write_text("yes")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, "ratio2"])


def test_caches_go_under_the_run_folder_unless_set(tmp_path, monkeypatch):
    for variable in CACHE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mine"))
    monkeypatch.chdir(tmp_path)
    caches = redirect_caches()
    assert caches["MPLCONFIGDIR"] == str(tmp_path / "mine")
    for variable in set(CACHE_VARIABLES) - {"MPLCONFIGDIR"}:
        assert caches[variable].startswith(str(tmp_path / ".cache")), variable


def test_a_plain_snakemake_writes_outside_the_project_only_what_the_readme_says(tmp_path):
    # Snakemake creates its (empty) source-cache folders before reading the Snakefile, so
    # medaug cannot redirect them; the README names them, and nothing else may appear.
    import subprocess

    from .conftest import REPO, SNAKEMAKE

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in CACHE_VARIABLES} | {"HOME": str(home)}
    command = [*SNAKEMAKE, "-n"]  # as a user types it, in the project folder
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    source_cache = ".cache/snakemake/snakemake/source-cache/snakemake-runtime-cache"
    assert written == [str(Path(source_cache).parents[i]) for i in range(3, -1, -1)] + [source_cache]
    assert source_cache.split("/", 1)[1] in (REPO / "README.md").read_text()
