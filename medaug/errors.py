"""Errors that reach the user as one readable line."""

from __future__ import annotations

from pathlib import Path


class MedaugError(Exception):
    """Base class: the message is complete and meant for the user as is."""


class ConfigError(MedaugError):
    """The configuration does not match the schema."""


class DatasetError(MedaugError):
    """A dataset file is missing, unreadable or inconsistent.

    The message always starts with the offending path so that a researcher can go
    straight to the file.
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class OutputError(MedaugError):
    """An output could not be written; the message starts with its path."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}")


def disk_full(path: str | Path) -> OutputError:
    return OutputError(path, "no space left on device (or quota exceeded) while writing it; free space and rerun")


def is_disk_full(exc: BaseException) -> bool:
    """An OSError for a full disk or quota, or torch's writer reporting one."""
    import errno

    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    # torch.save raises RuntimeError("... file write failed") when the disk fills up;
    # safetensors' writer (Rust) a SafetensorError that quotes the OS error.
    text = str(exc)
    if isinstance(exc, RuntimeError) and "write failed" in text:
        return True
    return type(exc).__name__ == "SafetensorError" and ("StorageFull" in text or "No space left" in text)
