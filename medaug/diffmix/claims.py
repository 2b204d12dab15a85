"""DiffMix's demo claims (:mod:`medaug.claims`): the SDEdit patches follow their virtual
maps (the map's nuclei darker than its background, more so than in the real crop scored
under the same map, i.e. more than copying the crop), and HoVer-Net's baseline learns (an
all-foreground prediction scores Dice about 0.43 and detects nothing, all-background 0);
reported: each arm's rare-class F_c."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medaug.claims import Claim
from medaug.diffmix import paths
from medaug.io import read_json
from medaug.paths import fill

DATASETS = ("consep", "glysac")


def _map_contrast_lead(dataset: str, kind: str):
    def read(workdir: Path) -> float:
        table = pd.read_csv(workdir / paths.TABLES / "synthesis.csv")
        row = table[(table.dataset == dataset) & (table.map_kind == kind)].iloc[0]
        return row["synthetic under its map"] - row["real crop under the virtual map"]

    return read


def _hovernet(dataset: str, arm: str, ratio: str, metric: str | None = None):
    """A test-set metric of one HoVer-Net run; None: the rare class's F_c."""

    def read(workdir: Path) -> float:
        record = read_json(workdir / fill(paths.HOVERNET_METRICS, dataset=dataset, arm=arm, ratio=ratio, seed=0))
        return record["metrics"][metric or f"f1_type{record['rare_class']}"]

    return read


CLAIMS = (
    *(
        Claim(
            paths.PAPER,
            f"{dataset} {kind} patches: map contrast over the real crop's",
            0.0,
            _map_contrast_lead(dataset, kind),
            strict=True,
        )
        for dataset in DATASETS
        for kind in ("balancing", "enlarging")
    ),
    *(
        claim
        for dataset in DATASETS
        for claim in (
            Claim(paths.PAPER, f"{dataset} HoVer-Net baseline Dice", 0.65, _hovernet(dataset, "baseline", "0", "dice")),
            Claim(
                paths.PAPER,
                f"{dataset} HoVer-Net baseline detection F1",
                0.45,
                _hovernet(dataset, "baseline", "0", "f1_detection"),
            ),
        )
    ),
    *(
        Claim(paths.PAPER, f"{dataset} {arm} rare-class F_c", None, _hovernet(dataset, arm, ratio), asserted=False)
        for dataset in DATASETS
        for arm, ratio in (("baseline", "0"), ("gradmix", "1"), ("diffmix", "1"))
    ),
)
