"""Reading trained weights that a user points the config at, with one-line errors.

A weights file can be missing, truncated, of another network, or a pickle that would run
code (``torch.load`` with ``weights_only=True`` refuses it). Each of these is the user's
file, not a bug: the error names the file and the problem in one line, never a chain of
tracebacks from torch, diffusers or transformers.
"""

from __future__ import annotations

from pathlib import Path

from medaug.errors import DatasetError

MESSAGE_CHARS = 400


def one_line(exc: BaseException) -> str:
    """``exc`` as ``Type: message`` on one line, cut to a readable length."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + " ..."
    return f"{type(exc).__name__}: {text}"


def read_state_dict(path: str | Path, what: str) -> dict:
    """A plain state dict (parameter name -> tensor) from a ``torch.save`` file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, f"{what} file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip, torch and refused-pickle errors all mean: not usable
        raise DatasetError(path, f"cannot read {what} ({one_line(exc)})") from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise DatasetError(path, f"{what} must be a state dict mapping parameter names to tensors")
    return state


def load_state_dict_file(module, path: str | Path, what: str) -> None:
    """Load ``path`` into ``module``; every key and shape must match."""
    state = read_state_dict(path, what)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # missing or unexpected keys, wrong shapes
        raise DatasetError(path, f"{what} do not match the network ({one_line(exc)})") from None


def from_pretrained(loader, folder: str | Path, what: str, subfolder: str | None = None):
    """``loader.from_pretrained`` on a local folder (never the hub), one line on failure."""
    where = Path(folder) / subfolder if subfolder else Path(folder)
    kwargs = {"local_files_only": True, **({"subfolder": subfolder} if subfolder else {})}
    try:
        return loader.from_pretrained(folder, **kwargs)
    except Exception as exc:  # diffusers/transformers wrap torch's errors two or three deep
        raise DatasetError(where, f"cannot load {what} ({one_line(exc)})") from None
