"""DiffBoost's nnU-Net arm (beyond the paper): nnU-Net v2, through its own CLI, on real +
synthetic slices at each ratio, with plans made on real data only.

One working folder per (dataset, fold, protocol) holds nnU-Net's raw/preprocessed/results
trees. ``Dataset001_real`` has the real slices of the protocol's training and selection
roles and is planned once; each ratio R > 0 gets ``Dataset{100+R}`` = the same real slices
plus the synthetic images of the training slices, preprocessed with the real plans
(synthetic data never changes normalisation or patch size). Our ``splits_final.json``
puts synthetic cases in ``train`` only:

- official protocol: train = development slices (+ synthetic), val = test slices (the
  official code selects on the test fold; nnU-Net's best checkpoint is then chosen there);
- clean protocol: train = train slices (+ synthetic), val = inner validation slices.

Test slices are predicted with the final checkpoint and scored per case like the paper
arm: positive slices (official) or full volumes at native resolution (clean).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from medaug.diffboost import paths, stages
from medaug.diffboost.scoring import score_cases
from medaug.diffboost.slices import PROTOCOL_ROLES, SliceData
from medaug.io import file_stamps, read_json, write_json
from medaug.nnunet import wrapper as nnunet
from medaug.paths import fill
from medaug.stage import Job, Stage

log = logging.getLogger(__name__)

REAL_ID = 1
REAL_NAME = "real"


def dataset_id(ratio: int) -> int:
    return REAL_ID if ratio == 0 else 100 + ratio


def _real_cases(data: SliceData, splits: dict, fold: int, protocol: str) -> tuple[list, list[str], list[str]]:
    train_role, select_role = PROTOCOL_ROLES[protocol]
    train_rows = data.role_slices(splits, fold, train_role)
    select_rows = data.role_slices(splits, fold, select_role)
    rows = pd.concat([train_rows, select_rows], ignore_index=True)
    images, masks = data.images(rows)
    cases = [(s, images[i], masks[i].astype(np.uint8)) for i, s in enumerate(rows.slice_id)]
    return cases, train_rows.slice_id.tolist(), select_rows.slice_id.tolist()


def _labels(prepared_dir: str | Path) -> dict[str, int]:
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
    data = SliceData(prepared_dir)
    cases, _, _ = _real_cases(data, splits, fold, protocol)
    test = data.test_slices(splits, fold, protocol)
    test_cases = [(r.slice_id, data.arrays[r.case_id]["image"][r.slice_index]) for r in test.itertuples()]
    plans = nnunet.plan_dataset(workdir, REAL_ID, REAL_NAME, cases, _labels(prepared_dir), test_cases, threads)
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
    run_identity: dict | None = None,
) -> pd.DataFrame:
    """Train nnU-Net on real (+ synthetic at ``ratio``) slices and score the test cases;
    ``run_identity`` lets a retry of the same run continue (``nnunet.train_and_predict``)."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    data = SliceData(prepared_dir, synthetic_dir, ratio)
    cases, train_ids, select_ids = _real_cases(data, splits, fold, protocol)
    synthetic_ids = []
    if ratio:
        masks = {case_id: mask for case_id, _, mask in cases}
        for slice_id in train_ids:
            pool = data.pool[slice_id]
            for k in range(1, len(pool) + 1):
                synthetic_ids.append(f"{slice_id}_syn{k:03d}")
                # A memory-mapped view: the dataset writer reads each image as it writes it,
                # instead of every synthetic image being held in memory at once.
                cases.append((synthetic_ids[-1], pool.mapped(k - 1), masks[slice_id]))
    predictions = nnunet.train_and_predict(
        workdir,
        REAL_ID,
        dataset_id(ratio),
        f"ratio{ratio}",
        cases if ratio else None,
        _labels(prepared_dir),
        {"train": train_ids + synthetic_ids, "val": select_ids},
        trainer,
        trainer_settings,
        device,
        threads,
        run_identity,
    )

    def read_predictions(rows: pd.DataFrame) -> np.ndarray:
        masks = [nnunet.read_nifti_2d(predictions / f"{s}{nnunet.FILE_ENDING}") for s in rows.slice_id]
        return np.stack(masks).astype(np.uint8)

    metrics, _ = score_cases(data, splits, fold, protocol, read_predictions)
    metrics.insert(0, "protocol", protocol)
    metrics.insert(0, "seed", 0)
    metrics.insert(0, "fold", fold)
    metrics["train_real"] = len(train_ids)
    metrics["train_synthetic"] = len(synthetic_ids)
    log.info("nnU-Net %s protocol: mean test Dice %.3f over %d cases", protocol, metrics.dice.mean(), len(metrics))
    return metrics


def _workdir(job: Job) -> str:
    """One nnU-Net working folder per (dataset, fold, protocol), shared by its ratios."""
    return fill(paths.NNUNET, **{k: v for k, v in job.wildcards.items() if k != "ratio"})


def _plan(job: Job) -> None:
    splits = read_json(job.inputs["splits"])
    fold, protocol = job.number("fold"), job.wildcards["protocol"]
    plan_real(job.inputs["prepared"], splits, fold, protocol, _workdir(job), job.outputs["plans"], job.threads or 2)


def _train(job: Job) -> None:
    settings = job.settings
    metrics = train_ratio(
        job.inputs["prepared"],
        read_json(job.inputs["splits"]),
        job.number("fold"),
        job.wildcards["protocol"],
        job.number("ratio"),
        job.inputs.get("synthetic"),
        _workdir(job),
        settings["trainer"],
        settings["trainer_settings"],
        threads=job.threads or 2,
        run_identity={"settings": settings, "inputs": file_stamps(job.inputs.values())},
    )
    metrics.to_csv(job.outputs["metrics"], sep="\t", index=False)


PLAN = Stage(stages.NNUNET_PLAN, _plan)
TRAIN = Stage(stages.NNUNET_TRAIN, _train)
plan_entry, train_entry = PLAN.entry, TRAIN.entry
