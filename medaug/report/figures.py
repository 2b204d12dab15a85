"""Figure helpers: headless matplotlib, one theme, saving that closes what it saved."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the headless Agg backend (jobs run without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure, *paths: str | Path, dpi: int = 150, tight: bool = True) -> None:
    """Write ``figure`` to each path (format from the suffix) and close it."""
    for path in paths:
        figure.savefig(path, dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    pyplot().close(figure)
