"""Logging for pipeline jobs: one log file per job, readable one-line errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from medaug.caches import redirect_caches
from medaug.errors import MedaugError, disk_full, is_disk_full

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(log_path: str | Path | None = None, level: int = logging.INFO) -> None:
    """Log to stderr and, when given, to ``log_path`` (truncated)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=level, format=FORMAT, handlers=handlers, force=True)
    logging.captureWarnings(True)


def run_job(job: Callable[[], object], log_path: str | Path | None = None, threads: int | None = None) -> object:
    """Run ``job`` with logging set up; a MedaugError (or a full disk) ends the process with
    one line naming the file and the problem instead of a traceback, and any other error
    with its traceback in the job's log as well as on stderr. ``threads`` caps torch's
    intra-op threads at what the scheduler gave the job."""
    configure(log_path)
    redirect_caches()
    if threads:
        try:
            import torch
        except ImportError:  # the data and report envs have no torch and need none
            pass
        else:
            torch.set_num_threads(threads)
    logger = logging.getLogger("medaug")
    try:
        return job()
    except MedaugError as exc:
        for line in str(exc).splitlines():
            logger.error(line)
    except Exception as exc:
        if is_disk_full(exc):
            logger.error(str(disk_full(getattr(exc, "filename", None) or "(the file being written)")))
        else:
            logger.exception("job failed")  # a bug, not a user error: the traceback helps
    raise SystemExit(1)
