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
