"""D-Cube's demo claims (:mod:`medaug.claims`): both classifiers learn (three classes:
chance is 1/3), the minority scenario costs the minority class recall (averaged over both
classifiers), and the real-data CNN recognises every class's synthetic images; reported:
the accuracies with synthetic images."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medaug.claims import Claim
from medaug.dcube import paths

MINORITY = "MALIGNANT"
CLASSES = ("BENIGN", MINORITY, "NORMAL")


def _clean(workdir: Path) -> pd.DataFrame:
    metrics = pd.read_csv(workdir / paths.METRICS, sep="\t")
    return metrics[metrics.protocol == "clean"]


def _accuracy(model: str, synthetic: bool = False):
    """Clean-protocol test accuracy on the full data, mean over the classifier seeds."""

    def read(workdir: Path) -> float:
        clean = _clean(workdir)
        rows = clean[(clean.scenario == "full") & (clean.model == model)]
        return rows[(rows.synthetic_count > 0) == synthetic].accuracy.mean()

    return read


def _minority_recall_drop(workdir: Path) -> float:
    """Full-data minus minority-scenario recall of the minority class, without synthetic
    images, averaged over both classifiers and the seeds."""
    clean = _clean(workdir)
    recall = clean[clean.synthetic_count == 0].groupby("scenario")[f"recall_{MINORITY}"].mean()
    return recall["full"] - recall[recall.index != "full"].iloc[0]


def _recognised(label: str):
    def read(workdir: Path) -> float:
        table = pd.read_csv(workdir / paths.TABLES / "synthetic_quality.csv")
        return table.set_index("class").loc[label, "baseline_accuracy_on_synthetic"]

    return read


CLAIMS = (
    *(
        Claim(paths.PAPER, f"{model} accuracy, full data", 0.5, _accuracy(model), strict=True)
        for model in ("cnn", "dcube")
    ),
    *(
        Claim(paths.PAPER, f"{model} accuracy, + synthetic", None, _accuracy(model, True), asserted=False)
        for model in ("cnn", "dcube")
    ),
    Claim(paths.PAPER, f"{MINORITY} recall drop, minority scenario", 0.1, _minority_recall_drop, strict=True),
    *(
        Claim(paths.PAPER, f"{label} synthetic images recognised as {label}", 0.5, _recognised(label))
        for label in CLASSES
    ),
)
