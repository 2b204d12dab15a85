"""What a demo claims about its trained models, and how a claim is checked.

A claim is one number of a finished run (a Dice, an accuracy, a difference) and the bar it
must clear. Each paper's ``claims`` module lists its own; the registry
(:func:`medaug.papers.demo_claims`) gathers them. The workflow test asserts every claim of
its demo run; ``tools/seed_spread.py`` measures every claim over seeds and float paths into
docs/demo-seed-spread.tsv, and each bar sits below the smallest value measured there, so
that a claim holds on any machine, not on one run of one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Claim:
    paper: str
    name: str
    bar: float | None  # None: a number the docs report, with no bar to clear
    read: Callable[[Path], float]  # the number, from a finished run's working directory
    strict: bool = False  # True: the value must exceed the bar, not merely reach it
    asserted: bool = True  # False: stated in the docs with its spread, not asserted by a test

    def __post_init__(self):
        if self.bar is None:  # a reported number has nothing to assert
            object.__setattr__(self, "asserted", False)

    def value(self, workdir: str | Path) -> float:
        return float(self.read(Path(workdir)))

    def holds(self, value: float) -> bool:
        if self.bar is None:
            return True
        return value > self.bar if self.strict else value >= self.bar

    def describe(self) -> str:
        return "reported" if self.bar is None else f"{'>' if self.strict else '>='} {self.bar:g}"


def failures(workdir: str | Path, claims: Iterable[Claim]) -> list[str]:
    """The asserted ``claims`` that a finished run in ``workdir`` does not clear."""
    failed = []
    for claim in claims:
        if claim.asserted:
            value = claim.value(workdir)
            if not claim.holds(value):
                failed.append(f"{claim.name}: {value:.3f}, needs {claim.describe()}")
    return failed


def summarize(spread: pd.DataFrame, claims: Iterable[Claim]) -> pd.DataFrame:
    """Per claim of a seed-spread table (tools/seed_spread.py): min, median and max over its
    runs, how many runs on which float paths, and whether the minimum clears the bar."""
    rows = []
    for claim in claims:
        values = spread[(spread.paper == claim.paper) & (spread.claim == claim.name)]
        if values.empty:
            continue
        rows.append(
            {
                "paper": claim.paper,
                "claim": claim.name,
                "bar": claim.describe(),
                "min": values.value.min(),
                "median": values.value.median(),
                "max": values.value.max(),
                "runs": len(values),
                "float paths": " ".join(sorted(set(values.float_path))),
                "asserted": "yes" if claim.asserted else "no",
                "clears its bar": claim.holds(values.value.min()),
            }
        )
    return pd.DataFrame(rows)


def summary_markdown(spread: pd.DataFrame, claims: Iterable[Claim]) -> str:
    """:func:`summarize` as a Markdown table."""
    lines = ["| paper | claim | bar | min | median | max | runs | float paths | asserted |", "|" + "---|" * 9]
    for row in summarize(spread, claims).to_dict("records"):
        numbers = " | ".join(f"{row[key]:.3f}" for key in ("min", "median", "max"))
        lines.append(
            f"| {row['paper']} | {row['claim']} | {row['bar']} | {numbers} | {row['runs']} "
            f"| {row['float paths']} | {row['asserted']} |"
        )
    return "\n".join(lines) + "\n"
