"""The floor of the real-data CI test: a short baseline segmenter on a real BUSI subset,
trained over seeds, and the clean-protocol test Dice it reaches.

    MEDAUG_BUSI_ROOT=../shared/data/busi/Dataset_BUSI_with_GT \\
        .venv/bin/python tools/real_busi_floor.py --seeds 0 1 2 3 4 --markdown docs/real-busi-floor.md

The subset is the first images of each class in natural order (``SUBSET``), linked into a
folder of BUSI's layout; it is prepared at 64 px, split by the DiffBoost demo's 3-fold
scheme (shuffled), and fold 0's baseline (the demo's AttentionUnet, ``SETTINGS``) is scored on its
test images under the clean protocol (a normal image predicted empty counts as right).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SUBSET = {"benign": 60, "malignant": 30, "normal": 20}
IMAGE_SIZE = 64
SETTINGS = {
    "channels": [8, 16, 32, 64],
    "strides": [2, 2, 2],
    "epochs": 30,
    "batch_size": 8,
    "learning_rate": 3e-3,
    "eval_every": 5,
    "protocols": ["clean"],
}
# Shuffled (seeded), so that fold 0's test images hold every class, as the full dataset's do.
SPLIT = {"scheme": "kfold", "n_folds": 3, "shuffle": True, "val_fraction": 0.2, "seed": 0}
# The test asserts the Dice stays above this; keep it below the measured minimum.
FLOOR = 0.35


def link_subset(root: Path, target: Path) -> Path:
    """The first ``SUBSET`` images per class of ``root`` with their masks, as symlinks in
    BUSI's layout under ``target``."""
    from medaug.datasets.base import natural_key

    for class_name, count in SUBSET.items():
        folder = target / class_name
        folder.mkdir(parents=True)
        images = sorted(
            (p for p in (root / class_name).glob("*.png") if "_mask" not in p.name), key=lambda p: natural_key(p.name)
        )
        for image in images[:count]:
            for path in [image, *sorted(root.joinpath(class_name).glob(f"{image.stem}_mask*.png"))]:
                (folder / path.name).symlink_to(path.resolve())
    return target


def train_subset(root: Path, workdir: Path, seed: int) -> tuple[float, float]:
    """Mean clean-protocol Dice over fold 0's test images of the subset's baseline at
    ``seed``, and what predicting nothing would score on them (their share of normal images)."""
    from medaug.diffboost.segmenter import Variant, train_and_evaluate
    from medaug.preparation import prepare_segmentation
    from medaug.splits import make_splits

    subset = link_subset(root, workdir / "busi_subset")
    entry = {"format": "busi", "root": str(subset), "modality": "US"}
    prepare_segmentation("busi", entry, workdir / "prepared", IMAGE_SIZE, (0.5, 99.5), None, None)
    splits = make_splits("busi", workdir / "prepared", "segmentation", SPLIT)
    variant = Variant("AttentionUnet", "none")
    metrics, _ = train_and_evaluate(workdir / "prepared", splits, 0, variant, SETTINGS, IMAGE_SIZE, seed)
    clean = metrics[metrics.protocol == "clean"]
    return float(clean.dice.mean()), float(clean.case_id.str.startswith("normal").mean())


def main() -> None:
    import tempfile

    import torch

    from tools.seed_spread import cpu_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--markdown", type=Path, help="write the table here")
    args = parser.parse_args()
    root = Path(os.environ["MEDAUG_BUSI_ROOT"])
    torch.set_num_threads(1)  # as the test suite runs it
    rows = []
    for seed in args.seeds:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as workdir:
            dice, empty_prediction_dice = train_subset(root, Path(workdir), seed)
        rows.append((seed, dice, time.perf_counter() - started))
        print(f"seed {seed}: clean test Dice {dice:.3f} ({rows[-1][2]:.0f} s)", flush=True)
    values = [dice for _, dice, _ in rows]
    summary = f"min {min(values):.3f}, median {statistics.median(values):.3f}, max {max(values):.3f}"
    print(summary)
    if args.markdown:
        lines = [
            "# Real BUSI: the CI test's floor",
            "",
            "`tools/real_busi_floor.py`: the first "
            + ", ".join(f"{n} {c}" for c, n in SUBSET.items())
            + f" images of the real BUSI dataset at {IMAGE_SIZE} px, fold 0 of 3, the demo's AttentionUnet for "
            f"{SETTINGS['epochs']} epochs; mean clean-protocol Dice over the fold's test images.",
            f"CPU: {cpu_model()}; one torch thread.",
            "",
            "| seed | Dice | seconds |",
            "|---|---|---|",
            *(f"| {seed} | {dice:.3f} | {seconds:.0f} |" for seed, dice, seconds in rows),
            "",
            f"Over {len(rows)} seeds: {summary}; floor asserted by the test: {FLOOR}",
            "",
            f"Predicting nothing scores {empty_prediction_dice:.3f} on the same images (the normal ones).",
            "",
        ]
        args.markdown.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
