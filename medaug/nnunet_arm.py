"""DiffBoost's nnU-Net arm (beyond the paper): nnU-Net v2, through its own CLI, on real +
synthetic slices at each ratio, with plans made on real data only.

One working folder per (dataset, fold, protocol) holds nnU-Net's raw/preprocessed/results
trees. ``Dataset001_real`` has the real slices of the protocol's training and selection
roles and is planned once; each ratio R > 0 gets ``Dataset{100+R}`` = the same real slices
plus the synthetic images of the training slices, preprocessed with the real plans
(synthetic data never changes normalisation or patch size). Our ``splits_final.json``
puts synthetic cases in ``train`` only:

- paper protocol: train = development slices (+ synthetic), val = test slices (the
  official code selects on the test fold; nnU-Net's best checkpoint is then chosen there);
- clean protocol: train = train slices (+ synthetic), val = inner validation slices.

Test slices are predicted with the final checkpoint and scored per case like the paper
arm: positive slices (paper) or full volumes at native resolution (clean).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from medaug import nnunet
from medaug.evaluation import case_metrics, resize_nearest
from medaug.io import write_json
from medaug.segmentation import PROTOCOL_ROLES, SliceData
from medaug.splits import role_cases

log = logging.getLogger(__name__)

REAL_ID = 1
REAL_NAME = "real"


def dataset_id(ratio: int) -> int:
    return REAL_ID if ratio == 0 else 100 + ratio


def _real_cases(data: SliceData, splits: dict, fold: int, protocol: str) -> tuple[list, list[str], list[str]]:
    train_role, select_role = PROTOCOL_ROLES[protocol]
    train_rows = data.positive_slices(role_cases(splits, fold, train_role))
    select_rows = data.positive_slices(role_cases(splits, fold, select_role))
    rows = pd.concat([train_rows, select_rows], ignore_index=True)
    images, masks = data.images(rows)
    cases = [(s, images[i], masks[i].astype(np.uint8)) for i, s in enumerate(rows.slice_id)]
    return cases, train_rows.slice_id.tolist(), select_rows.slice_id.tolist()


def _test_slices(data: SliceData, splits: dict, fold: int, protocol: str) -> pd.DataFrame:
    test = data.slices[data.slices.case_id.isin(role_cases(splits, fold, "test"))]
    return (test[test.positive] if protocol == "paper" else test).reset_index(drop=True)


def _labels(prepared_dir: str | Path) -> dict[str, int]:
    import json

    meta = json.loads((Path(prepared_dir) / "meta.json").read_text())
    return {("background" if value == "0" else name): int(value) for value, name in meta["labels"].items()}


def plan_real(
    prepared_dir: str | Path,
    splits: dict,
    fold: int,
    protocol: str,
    workdir: str | Path,
    out_plans: str | Path,
    threads: int = 2,
) -> dict:
    """Write and plan ``Dataset001_real`` and the test images; copy the plans to ``out_plans``."""
    workdir = Path(workdir)
    data = SliceData(prepared_dir)
    cases, _, _ = _real_cases(data, splits, fold, protocol)
    env = nnunet.nnunet_env(workdir, threads)
    test = _test_slices(data, splits, fold, protocol)
    test_cases = [(r.slice_id, data.arrays[r.case_id]["image"][r.slice_index]) for r in test.itertuples()]
    nnunet.write_dataset(env["nnUNet_raw"], REAL_ID, REAL_NAME, cases, _labels(prepared_dir), test_cases=test_cases)
    nnunet.plan_and_preprocess(REAL_ID, env, workdir / "logs" / "plan.log")
    plans = nnunet.read_plans(env["nnUNet_preprocessed"], REAL_ID)
    write_json(out_plans, plans)
    return plans


def train_ratio(
    prepared_dir: str | Path,
    splits: dict,
    fold: int,
    protocol: str,
    ratio: int,
    synthetic_dir: str | Path | None,
    workdir: str | Path,
    trainer: str,
    trainer_settings: dict,
    device: str | None = None,
    threads: int = 2,
) -> pd.DataFrame:
    """Train nnU-Net on real (+ synthetic at ``ratio``) slices and score the test cases."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    workdir = Path(workdir)
    data = SliceData(prepared_dir, synthetic_dir, ratio)
    cases, train_ids, select_ids = _real_cases(data, splits, fold, protocol)
    identifier = dataset_id(ratio)
    env = nnunet.nnunet_env(workdir, threads)
    logs = workdir / "logs" / f"ratio{ratio}"
    synthetic_ids = []
    if ratio:
        masks = {case_id: mask for case_id, _, mask in cases}
        for slice_id in train_ids:
            for k, image in enumerate(data.pool[slice_id], start=1):
                synthetic_ids.append(f"{slice_id}_syn{k:03d}")
                cases.append((synthetic_ids[-1], image.astype(np.float32), masks[slice_id]))
        nnunet.write_dataset(env["nnUNet_raw"], identifier, f"ratio{ratio}", cases, _labels(prepared_dir))
        nnunet.reuse_plans(REAL_ID, identifier, env, logs.with_suffix(".preprocess.log"))
    nnunet.write_splits(
        env["nnUNet_preprocessed"], identifier, [{"train": train_ids + synthetic_ids, "val": select_ids}]
    )
    train_env = nnunet.nnunet_env(workdir, threads, training=True, trainer_settings=trainer_settings)
    folder = nnunet.train(identifier, 0, train_env, trainer, device, logs.with_suffix(".train.log"))
    predictions = workdir / f"predictions_ratio{ratio}"
    shutil.rmtree(predictions, ignore_errors=True)
    test_images = nnunet.find_dataset_folder(env["nnUNet_raw"], REAL_ID) / "imagesTs"
    nnunet.predict(test_images, predictions, identifier, 0, env, trainer, device, logs.with_suffix(".predict.log"))
    (folder / "checkpoint_best.pth").unlink(missing_ok=True)  # 60+ MB each; the final one is what we score
    return _score(data, splits, fold, protocol, predictions, len(train_ids), len(synthetic_ids))


def _score(
    data: SliceData, splits: dict, fold: int, protocol: str, predictions: Path, n_real: int, n_synthetic: int
) -> pd.DataFrame:
    test = _test_slices(data, splits, fold, protocol)
    rows = []
    for case_id, group in test.groupby("case_id", sort=True):
        info = data.cases.set_index("case_id").loc[case_id]
        predicted = np.stack([nnunet.read_nifti_2d(predictions / f"{s}{nnunet.FILE_ENDING}") for s in group.slice_id])
        predicted = resize_nearest(predicted.astype(np.uint8), int(info.native_rows), int(info.native_cols))
        label = data.arrays[case_id]["mask_native"][group.slice_index.to_numpy()]
        spacing = (info.spacing_slice, info.spacing_row, info.spacing_col)
        if len(group) == 1:
            predicted, label, spacing = predicted[0], label[0], spacing[1:]
        rows.append({"case_id": case_id, "n_slices": len(group), **case_metrics(predicted, label, spacing)})
    metrics = pd.DataFrame(rows)
    metrics.insert(0, "protocol", protocol)
    metrics.insert(0, "seed", 0)
    metrics.insert(0, "fold", fold)
    metrics["train_real"] = n_real
    metrics["train_synthetic"] = n_synthetic
    log.info("nnU-Net %s protocol: mean test Dice %.3f over %d cases", protocol, metrics.dice.mean(), len(metrics))
    return metrics
