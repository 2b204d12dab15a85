"""nnU-Net v2 as a downstream segmentation arm: raw datasets, splits and the CLI steps.

Every nnU-Net step runs in a subprocess (``python -m medaug.nnunet.cli``, see there for why)
with an environment from :func:`nnunet_env`: nnU-Net reads its folders and knobs from
environment variables at import time, so a fresh process is the only reliable way to
point it at a per-run working directory (on CPU, training and prediction of one working
directory share a process: :func:`train_and_predict`).

Augmented datasets are planned with the plans of their real-only dataset
(:func:`reuse_plans`), so that the synthetic images change the training data only, not the
network, patch size or normalisation.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path

import numpy as np

from medaug.errors import MedaugError
from medaug.io import atomic_output, read_json, write_json
from medaug.nnunet.cli import THEN

log = logging.getLogger(__name__)

TRAINER_DIR = Path(__file__).resolve().parent / "trainers"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
PLANS = "nnUNetPlans"
CONFIGURATION = "2d"
FILE_ENDING = ".nii.gz"
TAIL_LINES = 40

# trainer_settings key -> environment variable read by nnUNetTrainer_medaug.
TRAINER_SETTINGS = {
    "epochs": "MEDAUG_NNUNET_EPOCHS",
    "iters": "MEDAUG_NNUNET_ITERS",
    "val_iters": "MEDAUG_NNUNET_VAL_ITERS",
    "batch": "MEDAUG_NNUNET_BATCH",
    "skip_final_val": "MEDAUG_NNUNET_SKIP_FINAL_VAL",
    "seed": "MEDAUG_NNUNET_SEED",
    "plot_every": "MEDAUG_NNUNET_PLOT_EVERY",
    "save_every": "MEDAUG_NNUNET_SAVE_EVERY",
}
# Written into a fold's results folder: what run its checkpoints belong to (see train_and_predict).
RUN_RECORD = "medaug_run.json"
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def nnunet_env(
    workdir: str | Path,
    threads: int = 2,
    training: bool = False,
    trainer_settings: dict | None = None,
    device: str = "cpu",
) -> dict[str, str]:
    """A copy of ``os.environ`` set up for nnU-Net under ``workdir``.

    ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` are ``workdir``'s
    sub-folders of the same names (created); ``threads`` sets nnU-Net's worker count and
    the BLAS/OpenMP threads; ``nnUNet_extTrainer`` makes ``nnUNetTrainer_medaug`` findable.
    With ``training``, data augmentation runs in ``threads`` worker processes on CUDA, and
    on CPU in the training process (``nnUNet_n_proc_DA=0``: fastest on few cores and in a
    fixed order, but it breaks planning, hence only here); torch uses ``threads`` threads,
    and ``trainer_settings`` (keys epochs, iters, val_iters, batch, skip_final_val, seed,
    plot_every, save_every; None = nnU-Net's default) become
    ``MEDAUG_NNUNET_*`` variables; without ``training`` they
    are ignored, and ``MEDAUG_NNUNET_*`` set in the caller's environment never pass through.
    """
    workdir = Path(workdir).resolve()
    unknown = set(trainer_settings or {}) - set(TRAINER_SETTINGS)
    if unknown:
        raise MedaugError(f"unknown nnU-Net trainer setting(s) {sorted(unknown)}; known: {sorted(TRAINER_SETTINGS)}")
    env = dict(os.environ)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        folder = workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        env[name] = str(folder)
    env["nnUNet_def_n_proc"] = str(threads)
    env["nnUNet_extTrainer"] = str(TRAINER_DIR)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    # So that nnU-Net's output reaches the log file as it is written, not at exit.
    env["PYTHONUNBUFFERED"] = "1"
    # Settings from the caller's environment must not leak into a run that did not ask for them.
    for name in TRAINER_SETTINGS.values():
        env.pop(name, None)
    env.pop("nnUNet_n_proc_DA", None)
    env.pop("MEDAUG_NNUNET_THREADS", None)
    if training:
        env["nnUNet_n_proc_DA"] = "0" if device == "cpu" else str(threads)
        env["MEDAUG_NNUNET_THREADS"] = str(threads)
        for key, value in (trainer_settings or {}).items():
            if value is None:
                continue
            if key == "skip_final_val":
                env[TRAINER_SETTINGS[key]] = "1" if value else "0"
            else:
                env[TRAINER_SETTINGS[key]] = str(int(value))
    return env


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name, ``DatasetXXX_Name``."""
    if not 1 <= int(dataset_id) <= 999:
        raise MedaugError(f"nnU-Net dataset ids have three digits (1-999), got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise MedaugError(f"nnU-Net dataset name {name!r} may contain only letters, digits, '_' and '-'")
    return f"Dataset{int(dataset_id):03d}_{name}"


def find_dataset_folder(root: str | Path, dataset_id: int) -> Path:
    """The one ``DatasetXXX_*`` folder of ``dataset_id`` under ``root`` (as nnU-Net resolves ids)."""
    root = Path(root)
    matches = sorted(p for p in root.glob(f"Dataset{int(dataset_id):03d}_*") if p.is_dir())
    if len(matches) != 1:
        found = ", ".join(p.name for p in matches) or "none"
        raise MedaugError(f"{root}: expected one folder for nnU-Net dataset {dataset_id}, found {found}")
    return matches[0]


def _write_nifti(path: Path, array: np.ndarray, spacing: tuple[float, float]) -> None:
    import nibabel as nib

    # One slice: (H, W) -> (H, W, 1). nnU-Net reads it as a 3D image with one slice, which
    # its 2d configuration handles; image and label share the affine, and predictions come
    # back in the same layout (see read_nifti_2d).
    affine = np.diag([float(spacing[0]), float(spacing[1]), 1.0, 1.0])
    nib.save(nib.Nifti1Image(array[:, :, None], affine), str(path))


def read_nifti_2d(path: str | Path) -> np.ndarray:
    """A single-slice NIfTI written by :func:`write_dataset` or predicted by nnU-Net, as (H, W)."""
    import nibabel as nib

    data = np.asarray(nib.load(str(path)).dataobj)
    if data.ndim == 3 and data.shape[2] == 1:
        return data[:, :, 0]
    if data.ndim == 2:
        return data
    raise MedaugError(f"{path}: expected a single-slice image, got shape {data.shape}")


def _check_case(case_id: str, image: np.ndarray, mask: np.ndarray | None, label_values: set[int]) -> None:
    if not _CASE_ID.match(case_id) or case_id.endswith("_0000"):
        raise MedaugError(f"nnU-Net case id {case_id!r} must be letters, digits, '_', '-', '.' (not ending in _0000)")
    if image.ndim != 2:
        raise MedaugError(f"case {case_id}: image must be 2D (H, W), got shape {image.shape}")
    if not np.isfinite(image).all():
        raise MedaugError(f"case {case_id}: image has non-finite values")
    if mask is None:
        return
    if mask.shape != image.shape:
        raise MedaugError(f"case {case_id}: mask shape {mask.shape} differs from image shape {image.shape}")
    extra = set(np.unique(mask).tolist()) - label_values
    if extra:
        raise MedaugError(
            f"case {case_id}: mask values {sorted(extra)} are not among the labels {sorted(label_values)}"
        )


def write_dataset(
    raw_root: str | Path,
    dataset_id: int,
    name: str,
    train_cases: list[tuple[str, np.ndarray, np.ndarray]],
    labels: dict[str, int],
    channel_name: str = "image",
    test_cases: list[tuple[str, np.ndarray]] | None = None,
    spacing: tuple[float, float] = (1.0, 1.0),
) -> Path:
    """Write an nnU-Net raw dataset of 2D cases; returns its folder (replaced if present).

    ``train_cases`` are ``(case_id, image float32 (H, W), mask uint8 (H, W))``, written as
    single-slice NIfTI to ``imagesTr/{case}_0000.nii.gz`` and ``labelsTr/{case}.nii.gz``;
    ``test_cases`` ``(case_id, image)`` go to ``imagesTs``. ``labels`` maps names to
    values and must hold ``"background": 0``. ``channel_name`` picks nnU-Net's
    normalisation ("CT": global percentile clipping; anything else: per-image z-score).
    """
    raw_root = Path(raw_root)
    folder = raw_root / dataset_folder_name(dataset_id, name)
    others = [p for p in raw_root.glob(f"Dataset{int(dataset_id):03d}_*") if p != folder]
    if others:
        raise MedaugError(f"{others[0]}: nnU-Net dataset id {dataset_id} is already used by another dataset")
    if labels.get("background") != 0:
        raise MedaugError(f"nnU-Net labels must map 'background' to 0, got {labels}")
    if sorted(labels.values()) != list(range(len(labels))):
        raise MedaugError(f"nnU-Net labels must be consecutive integers from 0, got {labels}")
    if not train_cases:
        raise MedaugError(f"nnU-Net dataset {name}: no training cases")
    test_cases = test_cases or []
    # imagesTr and imagesTs are separate name spaces: a case may be in both (the official
    # protocol validates on the test slices), but never twice in one.
    for images, cases in (("imagesTr", train_cases), ("imagesTs", test_cases)):
        ids = [c[0] for c in cases]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise MedaugError(f"nnU-Net dataset {name}: duplicate case ids in {images}: {duplicates[:5]}")
    label_values = set(labels.values())

    with atomic_output(folder, directory=True) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (tmp / sub).mkdir()
        for case_id, image, mask in train_cases:
            image, mask = np.asarray(image), np.asarray(mask)
            _check_case(case_id, image, mask, label_values)
            _write_nifti(tmp / "imagesTr" / f"{case_id}_0000{FILE_ENDING}", image.astype(np.float32), spacing)
            _write_nifti(tmp / "labelsTr" / f"{case_id}{FILE_ENDING}", mask.astype(np.uint8), spacing)
        for case_id, image in test_cases:
            image = np.asarray(image)
            _check_case(case_id, image, None, label_values)
            _write_nifti(tmp / "imagesTs" / f"{case_id}_0000{FILE_ENDING}", image.astype(np.float32), spacing)
        write_json(
            tmp / "dataset.json",
            {
                "channel_names": {"0": channel_name},
                "labels": {k: int(v) for k, v in labels.items()},
                "numTraining": len(train_cases),
                "file_ending": FILE_ENDING,
                "name": name,
            },
        )
    log.info("nnU-Net dataset %s: %d training, %d test cases -> %s", name, len(train_cases), len(test_cases), folder)
    return folder


def write_splits(preprocessed_root: str | Path, dataset_id: int, folds: list[dict[str, list[str]]]) -> Path:
    """Write ``splits_final.json`` (fold i = ``folds[i]``, each ``{"train": [...], "val": [...]}``).

    nnU-Net then trains fold i on exactly these cases instead of its own 5-fold split. The
    dataset's preprocessed folder must exist (after :func:`plan_and_preprocess` or
    :func:`reuse_plans`); case ids are checked against its ground truth copies.
    """
    folder = find_dataset_folder(preprocessed_root, dataset_id)
    known = None
    gt = folder / "gt_segmentations"
    if gt.is_dir():
        known = {p.name[: -len(FILE_ENDING)] for p in gt.glob(f"*{FILE_ENDING}")}
    records = []
    for index, fold in enumerate(folds):
        train_ids, val_ids = list(fold.get("train", [])), list(fold.get("val", []))
        if not train_ids or not val_ids:
            raise MedaugError(f"nnU-Net split {folder.name} fold {index}: train and val must both be non-empty")
        overlap = sorted(set(train_ids) & set(val_ids))
        if overlap:
            raise MedaugError(f"nnU-Net split {folder.name} fold {index}: cases in train and val: {overlap[:5]}")
        if known is not None:
            missing = sorted(set(train_ids + val_ids) - known)
            if missing:
                raise MedaugError(f"nnU-Net split {folder.name} fold {index}: unknown case ids {missing[:5]}")
        records.append({"train": [str(i) for i in train_ids], "val": [str(i) for i in val_ids]})
    path = folder / "splits_final.json"
    write_json(path, records)
    log.info("nnU-Net splits: %d fold(s) -> %s", len(records), path)
    return path


def run_cli(
    command: str, args: list[str], env: dict, log_file: str | Path | None = None, timeout: float | None = None
) -> None:
    """Run ``python -m medaug.nnunet.cli command *args`` with ``env``; ``args`` may chain
    more commands after ``cli.THEN``, run in the same process.

    Output (stdout and stderr) is written to ``log_file`` as it comes (appended, so one log
    can hold several steps); a non-zero exit or a timeout raises MedaugError naming the
    command, with the last lines of the output.
    """
    env = dict(env)
    # The subprocess must import this very medaug, whatever the caller's working directory.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    args = [str(a) for a in args]
    cmd = [sys.executable, "-m", "medaug.nnunet.cli", command, *args]
    command = "+".join([command] + [args[i + 1] for i, a in enumerate(args[:-1]) if a == THEN])
    own_log = log_file is None
    if own_log:
        handle, name = tempfile.mkstemp(prefix=f"nnunet_{command}_", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    else:
        log_path = Path(log_file)
        log_path.parent.mkdir(parents=True, exist_ok=True)
    log.info("nnU-Net %s %s (log: %s)", command, " ".join(cmd[4:]), "temporary" if own_log else log_path)
    problem = None
    try:
        with log_path.open("a") as out:
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            # Own session: on a timeout the whole group (nnU-Net's worker processes too) is killed.
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                problem = f"timed out after {timeout:g} s"
            except BaseException:
                _kill_group(proc)
                raise
            else:
                if code != 0:
                    problem = f"failed with exit code {code}"
        if problem:
            tail = _tail(log_path)
            where = "" if own_log else f" (full log: {log_path})"
            raise MedaugError(f"nnU-Net {command} {problem}{where}; last lines:\n{tail}")
    finally:
        if own_log:
            log_path.unlink(missing_ok=True)


def _kill_group(proc: subprocess.Popen) -> None:
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    with path.open(errors="replace") as handle:
        return "".join(deque(handle, maxlen=lines)).rstrip()


def _threads(env: dict) -> str:
    return str(env.get("nnUNet_def_n_proc", "2"))


def plan_and_preprocess(dataset_id: int, env: dict, log_file: str | Path | None = None, verify: bool = True) -> None:
    """Fingerprint, plan and preprocess the 2d configuration (``nnUNetv2_plan_and_preprocess``),
    with nnU-Net's dataset integrity check first unless ``verify`` is False."""
    n = _threads(env)
    args = ["-d", str(dataset_id), "-c", CONFIGURATION, "-np", n, "-npfp", n, "--no_pbar"]
    run_cli("plan", [*args, "--verify_dataset_integrity"] if verify else args, env, log_file)


def reuse_plans(
    source_id: int, target_id: int, env: dict, log_file: str | Path | None = None, verify: bool = False
) -> None:
    """Preprocess ``target_id`` (raw data written) with the plans of ``source_id`` (planned).

    The plans are moved with ``nnUNetv2_move_plans_between_datasets`` (only the dataset name
    changes) and the 2d configuration is preprocessed with them. The target gets the
    source's fingerprint, the one its plans were derived from: nnU-Net's trainer wants the
    file, and extracting the target's own would cost about half a minute for nothing (it
    samples 10^7 intensities whatever the dataset's size). ``verify`` runs nnU-Net's
    integrity check on the target's raw data first; off by default because
    :func:`write_dataset` already checks what it would (shapes, label values, one affine),
    and it costs ~15 s of worker start-up per dataset.
    """
    raw = Path(env["nnUNet_raw"])
    preprocessed = Path(env["nnUNet_preprocessed"])
    source = find_dataset_folder(preprocessed, source_id)
    for needed in (f"{PLANS}.json", "dataset_fingerprint.json"):
        if not (source / needed).is_file():
            raise MedaugError(f"{source / needed}: missing; run plan_and_preprocess on dataset {source_id} first")
    target_raw = find_dataset_folder(raw, target_id)
    n = _threads(env)
    if verify:
        run_cli("verify", ["-d", str(target_id), "-np", n], env, log_file)
    target = preprocessed / target_raw.name
    target.mkdir(parents=True, exist_ok=True)
    # nnU-Net's planner would copy these two; moving plans does not.
    shutil.copyfile(target_raw / "dataset.json", target / "dataset.json")
    shutil.copyfile(source / "dataset_fingerprint.json", target / "dataset_fingerprint.json")
    run_cli("move_plans", ["-s", str(source_id), "-t", str(target_id), "-sp", PLANS, "-tp", PLANS], env, log_file)
    run_cli(
        "preprocess",
        ["-d", str(target_id), "-plans_name", PLANS, "-c", CONFIGURATION, "-np", n, "--no_pbar"],
        env,
        log_file,
    )


def results_folder(env: dict, dataset_id: int, fold: int | str, trainer: str = "nnUNetTrainer_medaug") -> Path:
    """``nnUNet_results/DatasetXXX_Name/{trainer}__nnUNetPlans__2d/fold_{fold}``."""
    dataset = find_dataset_folder(env["nnUNet_preprocessed"], dataset_id).name
    return Path(env["nnUNet_results"]) / dataset / f"{trainer}__{PLANS}__{CONFIGURATION}" / f"fold_{fold}"


def train(
    dataset_id: int,
    fold: int,
    env: dict,
    trainer: str = "nnUNetTrainer_medaug",
    device: str = "cpu",
    log_file: str | Path | None = None,
    resume: bool = False,
) -> Path:
    """Train one fold of the 2d configuration; returns the fold's output folder.

    Use an environment from ``nnunet_env(..., training=True, trainer_settings=...)``;
    ``resume`` continues from the fold's latest checkpoint (``--c``).
    """
    run_cli("train", _train_args(dataset_id, fold, trainer, device, resume), env, log_file)
    return _trained_folder(env, dataset_id, fold, trainer)


def _train_args(dataset_id: int, fold: int, trainer: str, device: str, resume: bool = False) -> list[str]:
    args = [str(dataset_id), CONFIGURATION, str(fold), "-tr", trainer, "-p", PLANS, "-device", device]
    return [*args, "--c"] if resume else args


def continues_run(folder: Path, identity: dict) -> bool:
    """Whether the fold folder ``folder`` holds a checkpoint of the run ``identity`` (then
    training continues from it); otherwise the folder is emptied and ``identity`` recorded
    in it, for a retry to find."""
    record = folder / RUN_RECORD
    checkpoints = [folder / name for name in ("checkpoint_final.pth", "checkpoint_latest.pth")]
    same_run = record.is_file() and json.loads(record.read_text()) == json.loads(json.dumps(identity))
    if same_run and any(path.is_file() for path in checkpoints):
        log.info("%s: continuing the same run from its latest checkpoint", folder)
        return True
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    record.write_text(json.dumps(identity, indent=1, sort_keys=True) + "\n")
    return False


def _trained_folder(env: dict, dataset_id: int, fold: int, trainer: str) -> Path:
    folder = results_folder(env, dataset_id, fold, trainer)
    if not (folder / "checkpoint_final.pth").is_file():
        raise MedaugError(f"{folder}: nnU-Net train finished without checkpoint_final.pth")
    return folder


def predict(
    input_dir: str | Path,
    output_dir: str | Path,
    dataset_id: int,
    fold: int,
    env: dict,
    trainer: str = "nnUNetTrainer_medaug",
    device: str = "cpu",
    log_file: str | Path | None = None,
    processes: int = 0,
) -> None:
    """Segment every ``{case}_0000.nii.gz`` of ``input_dir`` into ``output_dir/{case}.nii.gz``
    with the final checkpoint of one fold, without test-time mirroring.

    ``processes`` is nnU-Net's worker count for preprocessing and for export each
    (``-npp``/``-nps``). The default 0 runs both in the main process (nnU-Net's sequential
    mode, same output): each worker is a spawned process that imports torch, which costs
    more than it saves on a CPU or with few 2D images; use 1-3 for large test sets on a GPU.
    """
    cases = _cases_to_predict(input_dir)
    args = _predict_args(input_dir, output_dir, dataset_id, fold, trainer, device, processes)
    run_cli("predict", args, env, log_file)
    _check_predictions(output_dir, cases)


def _cases_to_predict(input_dir: str | Path) -> list[str]:
    cases = sorted(p.name[: -len(f"_0000{FILE_ENDING}")] for p in Path(input_dir).glob(f"*_0000{FILE_ENDING}"))
    if not cases:
        raise MedaugError(f"{input_dir}: no *_0000{FILE_ENDING} images to predict")
    return cases


def _predict_args(
    input_dir: str | Path, output_dir: str | Path, dataset_id: int, fold: int, trainer: str, device: str, processes: int
) -> list[str]:
    args = ["-i", input_dir, "-o", output_dir, "-d", dataset_id, "-tr", trainer, "-c", CONFIGURATION]
    args += ["-f", fold, "-p", PLANS, "-chk", "checkpoint_final.pth", "--disable_tta"]
    args += ["-npp", processes, "-nps", processes, "-device", device, "--disable_progress_bar"]
    return [str(a) for a in args]


def _check_predictions(output_dir: str | Path, cases: list[str]) -> None:
    missing = [c for c in cases if not (Path(output_dir) / f"{c}{FILE_ENDING}").is_file()]
    if missing:
        raise MedaugError(f"{output_dir}: nnU-Net predict wrote no segmentation for {missing[:5]}")


def read_plans(preprocessed_root: str | Path, dataset_id: int) -> dict:
    """The dataset's ``nnUNetPlans.json``."""
    return read_json(find_dataset_folder(preprocessed_root, dataset_id) / f"{PLANS}.json")


# --- a whole arm: plan on real data once, then train and predict each augmented dataset ------------


def plan_dataset(
    workdir: str | Path,
    dataset_id: int,
    name: str,
    cases: list[tuple[str, np.ndarray, np.ndarray]],
    labels: dict[str, int],
    test_cases: list[tuple[str, np.ndarray]],
    threads: int = 2,
) -> dict:
    """Write the reference dataset (real cases, and the test images every later dataset is
    predicted on) under ``workdir`` and plan it; returns its plans."""
    env = nnunet_env(workdir, threads)
    write_dataset(env["nnUNet_raw"], dataset_id, name, cases, labels, test_cases=test_cases)
    plan_and_preprocess(dataset_id, env, Path(workdir) / "logs" / "plan.log")
    return read_plans(env["nnUNet_preprocessed"], dataset_id)


def train_and_predict(
    workdir: str | Path,
    reference_id: int,
    dataset_id: int,
    name: str,
    cases: list[tuple[str, np.ndarray, np.ndarray]] | None,
    labels: dict[str, int],
    split: dict[str, list[str]],
    trainer: str,
    trainer_settings: dict,
    device: str = "cpu",
    threads: int = 2,
    run_identity: dict | None = None,
) -> Path:
    """Train fold 0 of ``dataset_id`` on ``split`` and predict the reference dataset's test
    images; returns the predictions' folder.

    ``cases`` (written as dataset ``dataset_id`` and preprocessed with the reference's
    plans) or None to train on the reference dataset itself (``dataset_id ==
    reference_id``). Only the final checkpoint is kept: it is what gets predicted.

    ``run_identity`` (JSON-able; e.g. the job's settings and its inputs' stamps) names the
    run: a fold folder holding checkpoints of the same run continues from its latest one
    (nnU-Net's ``--c``: a job killed at its time limit and retried resumes); any other
    checkpoint is removed and training starts afresh, so a run never mixes settings.
    Without it training always starts afresh.
    """
    workdir = Path(workdir)
    env = nnunet_env(workdir, threads)
    logs = workdir / "logs" / name
    if cases is not None:
        write_dataset(env["nnUNet_raw"], dataset_id, name, cases, labels)
        reuse_plans(reference_id, dataset_id, env, logs.with_suffix(".preprocess.log"))
    write_splits(env["nnUNet_preprocessed"], dataset_id, [split])
    train_env = nnunet_env(workdir, threads, training=True, trainer_settings=trainer_settings, device=device)
    identity = {"run": run_identity, "trainer": trainer, "trainer_settings": trainer_settings, "split": split}
    resume = run_identity is not None and continues_run(results_folder(env, dataset_id, 0, trainer), identity)
    predictions = workdir / f"predictions_{name}"
    shutil.rmtree(predictions, ignore_errors=True)
    test_images = find_dataset_folder(env["nnUNet_raw"], reference_id) / "imagesTs"
    test_ids = _cases_to_predict(test_images)
    if device == "cpu":
        # One process for both: nnU-Net's imports cost about 7 s per process, as long as a
        # short demo training. The training-only settings of train_env are read by the
        # trainer alone. Not on CUDA: there both entry points call
        # torch.set_num_interop_threads, which a process may call only once.
        train_args = _train_args(dataset_id, 0, trainer, device, resume)
        predict_args = _predict_args(test_images, predictions, dataset_id, 0, trainer, device, 0)
        run_cli("train", [*train_args, THEN, "predict", *predict_args], train_env, logs.with_suffix(".log"))
        folder = _trained_folder(env, dataset_id, 0, trainer)
        _check_predictions(predictions, test_ids)
    else:
        folder = train(dataset_id, 0, train_env, trainer, device, logs.with_suffix(".train.log"), resume)
        predict(test_images, predictions, dataset_id, 0, env, trainer, device, logs.with_suffix(".predict.log"))
    (folder / "checkpoint_best.pth").unlink(missing_ok=True)  # 60+ MB each; the final one is what we score
    return predictions
