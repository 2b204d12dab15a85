"""What every paper's report says about where its data came from: the caption line naming
each dataset's folder, and the mark that titles of tables and figures carry when any of it
is a generated stand-in."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from medaug.paths import is_demo_data

STAND_IN_MARK = "generated stand-in data, not the real dataset"
# Set by a report job for the tables and figures it writes (see stand_in_titles).
_STAND_IN = contextvars.ContextVar("stand_in_titles", default=False)


def data_sources(config: dict, datasets: list[str]) -> str:
    """Caption line naming each dataset's folder and flagging generated stand-ins, so that a
    figure made on stand-in data can never pass for one made on the real dataset."""
    parts = []
    for name in datasets:
        root = config["datasets"][name]["root"]
        flag = " (generated stand-in, not the real dataset)" if is_demo_data(root) else ""
        parts.append(f"{name} from ``{root}``{flag}")
    return "Data: " + "; ".join(parts) + "."


def uses_stand_ins(config: dict, datasets: list[str]) -> bool:
    """Whether any of ``datasets`` is read from a generated stand-in."""
    return any(is_demo_data(config["datasets"][name]["root"]) for name in datasets)


@contextmanager
def stand_in_titles(stand_in: bool) -> Iterator[None]:
    """Within the block, :func:`marked` titles (every table page and saved figure) say that
    the data are generated stand-ins when ``stand_in``: a table or figure copied out of the
    report keeps the warning that its caption gives."""
    token = _STAND_IN.set(stand_in)
    try:
        yield
    finally:
        _STAND_IN.reset(token)


def marked(title: str) -> str:
    """``title``, with the stand-in mark where the report job's data are stand-ins."""
    if not _STAND_IN.get():
        return title
    return f"{title} [{STAND_IN_MARK}]" if title else f"[{STAND_IN_MARK}]"
