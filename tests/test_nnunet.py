import importlib.util
import json
import multiprocessing
import time
from types import SimpleNamespace

import numpy as np
import pytest

from medaug.errors import MedaugError
from medaug.nnunet import cli
from medaug.nnunet.wrapper import (
    TRAINER_DIR,
    nnunet_env,
    plan_and_preprocess,
    predict,
    read_nifti_2d,
    read_plans,
    reuse_plans,
    run_cli,
    train,
    write_dataset,
    write_splits,
)

LABELS = {"background": 0, "disk": 1}


def disk_case(rng: np.random.Generator, shape=(32, 32)) -> tuple[np.ndarray, np.ndarray]:
    """A bright disk at a random place on noise, and its mask."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    radius = rng.uniform(4, 8)
    centre = rng.uniform(radius, np.array(shape) - radius)
    mask = ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2).astype(np.uint8)
    image = (rng.normal(0, 0.3, size=shape) + 2.0 * mask).astype(np.float32)
    return image, mask


def test_nnunet_env_sets_folders_threads_trainer_and_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAUG_NNUNET_EPOCHS", "77")  # must not leak into runs that did not ask
    env = nnunet_env(tmp_path, threads=3)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        assert env[name] == str((tmp_path / name).resolve()) and (tmp_path / name).is_dir()
    assert env["nnUNet_def_n_proc"] == "3" and env["OMP_NUM_THREADS"] == "3"
    assert env["nnUNet_extTrainer"] == str(TRAINER_DIR)
    assert (TRAINER_DIR / "nnUNetTrainer_medaug.py").is_file() and not (TRAINER_DIR / "__init__.py").exists()
    assert "nnUNet_n_proc_DA" not in env and "MEDAUG_NNUNET_EPOCHS" not in env

    settings = {"epochs": 1, "iters": 2, "val_iters": 1, "batch": 2, "skip_final_val": True, "plot_every": 0}
    env = nnunet_env(tmp_path, training=True, trainer_settings=settings)
    assert env["nnUNet_n_proc_DA"] == "0" and env["MEDAUG_NNUNET_PLOT_EVERY"] == "0"
    assert env["MEDAUG_NNUNET_EPOCHS"] == "1" and env["MEDAUG_NNUNET_ITERS"] == "2"
    assert env["MEDAUG_NNUNET_VAL_ITERS"] == "1" and env["MEDAUG_NNUNET_BATCH"] == "2"
    assert env["MEDAUG_NNUNET_SKIP_FINAL_VAL"] == "1"
    # On CUDA the job's CPUs run nnU-Net's augmentation workers.
    assert nnunet_env(tmp_path, threads=8, training=True, device="cuda")["nnUNet_n_proc_DA"] == "8"
    # None keeps nnU-Net's default.
    assert "MEDAUG_NNUNET_BATCH" not in nnunet_env(tmp_path, training=True, trainer_settings={"batch": None})
    with pytest.raises(MedaugError, match="unknown"):
        nnunet_env(tmp_path, training=True, trainer_settings={"epoch": 1})


def test_run_cli_failure_names_the_command(tmp_path):
    env = nnunet_env(tmp_path)
    log_file = tmp_path / "logs" / "verify.log"
    with pytest.raises(MedaugError, match="nnU-Net verify failed") as info:
        run_cli("verify", ["-d", "999"], env, log_file)
    # The message points at the log and carries its tail (nnU-Net's own complaint).
    assert str(log_file) in str(info.value) and "Could not find a dataset with the ID 999" in str(info.value)
    with pytest.raises(MedaugError, match="nnU-Net bogus failed"):
        run_cli("bogus", [], env)
    with pytest.raises(MedaugError, match="nnU-Net verify timed out"):
        run_cli("verify", ["-d", "999"], env, timeout=0.5)


def test_launcher_chains_commands_and_checks_them_all_before_running_one(capsys):
    assert cli.split_commands(["train", "1", "2d", cli.THEN, "predict", "-i", "x"]) == [
        ["train", "1", "2d"],
        ["predict", "-i", "x"],
    ]
    # An unknown second command is reported before the first one runs (this one would fail).
    assert cli.main(["verify", "-d", "999", cli.THEN, "bogus"]) == 2
    assert "(got bogus)" in capsys.readouterr().err


def test_planning_pools_fork_only_inside_the_launchers_planning_commands():
    with cli.fork_worker_pools():
        assert multiprocessing.get_context("spawn").get_start_method() == "fork"
        assert multiprocessing.get_context("forkserver").get_start_method() == "forkserver"
    assert multiprocessing.get_context("spawn").get_start_method() == "spawn"
    assert set(cli.PLANNING_COMMANDS) <= {*cli.COMMANDS, *cli.EXTRA_COMMANDS} and "train" not in cli.PLANNING_COMMANDS


@pytest.mark.parametrize(
    ("every", "drawn_after"),
    [(1, [0, 1, 2, 3, 4]), (2, [1, 3, 4]), (0, [4])],
)
def test_the_trainer_draws_its_progress_figure_every_n_epochs_and_after_the_last(every, drawn_after):
    spec = importlib.util.spec_from_file_location("nnUNetTrainer_medaug", TRAINER_DIR / "nnUNetTrainer_medaug.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plots = module.nnUNetTrainer_medaug._plots_this_epoch
    trainer = SimpleNamespace(num_epochs=5, medaug_plot_every=every)
    drawn = [epoch for epoch in range(5) if plots(SimpleNamespace(**vars(trainer), current_epoch=epoch))]
    assert drawn == drawn_after


def test_write_dataset_rejects_bad_cases(tmp_path):
    image = np.zeros((8, 8), np.float32)
    with pytest.raises(MedaugError, match="mask values"):
        write_dataset(tmp_path, 5, "Bad", [("c1", image, np.full((8, 8), 2, np.uint8))], LABELS)
    with pytest.raises(MedaugError, match="mask shape"):
        write_dataset(tmp_path, 5, "Bad", [("c1", image, np.zeros((8, 9), np.uint8))], LABELS)
    with pytest.raises(MedaugError, match="background"):
        write_dataset(tmp_path, 5, "Bad", [("c1", image, np.zeros((8, 8), np.uint8))], {"disk": 1})
    assert not list(tmp_path.iterdir())


def test_nnunet_end_to_end_with_reused_plans_and_custom_split(tmp_path):
    """Real-only dataset A is planned; A+synthetic dataset B reuses A's plans, trains one
    tiny fold on our split through nnUNetTrainer_medaug, and predicts held-out images."""
    rng = np.random.default_rng(0)
    real = [(f"real{i:02d}", *disk_case(rng)) for i in range(10)]
    synthetic = [(f"syn{i:02d}", *disk_case(rng)) for i in range(4)]
    # Not square, and not the training size: predictions must keep the input's layout.
    test = [(f"test{i}", disk_case(rng, shape=(32, 40))[0]) for i in range(2)]
    timings = {}

    def timed(step, call, *args, **kwargs):
        start = time.perf_counter()
        result = call(*args, **kwargs)
        timings[step] = round(time.perf_counter() - start, 1)
        return result

    env = nnunet_env(tmp_path, threads=2)
    raw = tmp_path / "nnUNet_raw"
    logs = tmp_path / "logs"
    write_dataset(raw, 1, "Real", real, LABELS)
    dataset_b = write_dataset(raw, 2, "RealSyn", real + synthetic, LABELS, test_cases=test)

    timed("plan_and_preprocess A", plan_and_preprocess, 1, env, logs / "plan_A.log")
    timed("reuse_plans B", reuse_plans, 1, 2, env, logs / "plans_B.log")
    plans_a, plans_b = read_plans(env["nnUNet_preprocessed"], 1), read_plans(env["nnUNet_preprocessed"], 2)
    assert plans_b.pop("dataset_name") == "Dataset002_RealSyn" and plans_a.pop("dataset_name") == "Dataset001_Real"
    assert plans_a == plans_b

    split = [{"train": [c[0] for c in real[:8] + synthetic], "val": [c[0] for c in real[8:]]}]
    splits_file = write_splits(env["nnUNet_preprocessed"], 2, split)

    settings = {"epochs": 1, "iters": 2, "val_iters": 1, "batch": 2, "skip_final_val": True}
    train_env = nnunet_env(tmp_path, threads=2, training=True, trainer_settings=settings)
    fold_dir = timed("train B fold 0", train, 2, 0, train_env, log_file=logs / "train_B.log")
    assert fold_dir.parent.name == "nnUNetTrainer_medaug__nnUNetPlans__2d" and fold_dir.name == "fold_0"

    out = tmp_path / "predictions"
    timed("predict", predict, dataset_b / "imagesTs", out, 2, 0, env, log_file=logs / "predict_B.log")
    print("nnU-Net step timings (s):", timings)

    for case_id, image in test:
        prediction = read_nifti_2d(out / f"{case_id}.nii.gz")
        assert prediction.shape == image.shape
        assert set(np.unique(prediction).tolist()) <= {0, 1}

    # nnU-Net used our split file as written (it would otherwise create its own 5-fold split).
    assert json.loads(splits_file.read_text()) == split
    assert not any(c.startswith("syn") for fold in json.loads(splits_file.read_text()) for c in fold["val"])
    (training_log,) = fold_dir.glob("training_log_*.txt")
    trainer_log = training_log.read_text()
    assert "Using splits from existing split file" in trainer_log
    assert "This split has 12 training and 2 validation cases" in trainer_log
    assert "epochs=1, iterations/epoch=2, val iterations/epoch=1, batch size=2" in trainer_log
    assert "final validation skipped" in trainer_log and not (fold_dir / "validation").exists()
    # Found through nnUNet_extTrainer, as the (crashing-without-timm) stock lookup was passed.
    assert "Using trainer 'nnUNetTrainer_medaug' from:" in (logs / "train_B.log").read_text()

    for checkpoint in tmp_path.rglob("*.pth"):
        checkpoint.unlink()


def test_a_case_may_be_in_training_and_test_images_but_not_twice_in_one(tmp_path):
    """The official protocol validates on the test slices: they are training cases (val)
    and test images at once, which nnU-Net's separate imagesTr/imagesTs allow."""
    image, mask = disk_case(np.random.default_rng(0))
    folder = write_dataset(
        tmp_path, 1, "both", [("a", image, mask), ("b", image, mask)], LABELS, test_cases=[("a", image)]
    )
    assert (folder / "imagesTr" / "a_0000.nii.gz").is_file() and (folder / "imagesTs" / "a_0000.nii.gz").is_file()
    with pytest.raises(MedaugError, match="duplicate case ids in imagesTr"):
        write_dataset(tmp_path, 2, "twice", [("a", image, mask), ("a", image, mask)], LABELS)


RESUME_SCRIPT = """
import json, sys
import numpy as np
from medaug.nnunet.wrapper import plan_and_preprocess, nnunet_env, train_and_predict, write_dataset
from tests.test_nnunet import LABELS, disk_case

workdir, settings, identity = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
rng = np.random.default_rng(0)
cases = [(f"case{i:02d}", *disk_case(rng)) for i in range(8)]
env = nnunet_env(workdir, threads=1)
write_dataset(env["nnUNet_raw"], 1, "Disks", cases, LABELS, test_cases=[("test0", disk_case(rng)[0])])
plan_and_preprocess(1, env, verify=False)
split = {"train": [c[0] for c in cases[:6]], "val": [c[0] for c in cases[6:]]}
train_and_predict(workdir, 1, 1, "disks", None, LABELS, split, "nnUNetTrainer_medaug", settings, "cpu", 1, identity)
"""


def test_a_killed_nnunet_training_resumes_on_retry_and_a_changed_run_starts_afresh(tmp_path):
    """As a SLURM time limit ends a job and Snakemake's retry starts it again: the same run
    continues from checkpoint_latest.pth (nnU-Net's --c); another run never does."""
    import os
    import signal
    import subprocess
    import sys

    from .conftest import REPO

    settings = {"epochs": 20, "iters": 3, "val_iters": 1, "batch": 2, "skip_final_val": True, "seed": 0}
    settings |= {"plot_every": 0, "save_every": 1}
    script = tmp_path / "train.py"
    script.write_text(RESUME_SCRIPT)
    workdir = tmp_path / "nnunet"

    def start(identity, settings=settings):
        command = [sys.executable, str(script), str(workdir), json.dumps(settings), json.dumps(identity)]
        return subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)

    fold = workdir / "nnUNet_results" / "Dataset001_Disks" / "nnUNetTrainer_medaug__nnUNetPlans__2d" / "fold_0"
    job = start({"job": "a"})
    deadline = time.monotonic() + 600
    while not (fold / "checkpoint_latest.pth").is_file():
        assert job.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.2)
    # As SLURM ends a job: every process of it, nnU-Net's own session included.
    import psutil

    for process in [*psutil.Process(job.pid).children(recursive=True), psutil.Process(job.pid)]:
        process.send_signal(signal.SIGKILL)
    job.wait()
    assert not (fold / "checkpoint_final.pth").exists()

    def first_epoch(log):
        return int(next(line for line in log.read_text().splitlines() if ": Epoch " in line).split(": Epoch ")[1])

    assert start({"job": "a"}).wait(timeout=600) == 0
    logs = sorted(fold.glob("training_log_*.txt"), key=lambda p: p.stat().st_mtime)
    assert len(logs) == 2 and first_epoch(logs[0]) == 0 and first_epoch(logs[1]) >= 1
    assert (fold / "checkpoint_final.pth").is_file()

    # Another run (other settings or inputs) finds that checkpoint and starts afresh.
    assert start({"job": "b"}, {**settings, "epochs": 2}).wait(timeout=600) == 0
    (log,) = fold.glob("training_log_*.txt")
    assert first_epoch(log) == 0 and json.loads((fold / "medaug_run.json").read_text())["run"] == {"job": "b"}
