"""Launcher for the stock nnU-Net v2 command-line tools.

Run as ``python -m medaug.nnunet.cli COMMAND ARGS...``; ``COMMAND`` names one of nnU-Net's
console scripts (see :data:`COMMANDS`), whose function gets ``ARGS`` unchanged, or
``verify`` (nnU-Net's dataset integrity check alone).

Why a launcher: nnU-Net looks up a trainer class (``-tr``, and every ``predict``) by
importing every module under ``nnunetv2/training/nnUNetTrainer/``. One of them,
``primus/primus_trainers.py``, imports ``dynamic_network_architectures.architectures.primus``,
which imports ``timm``; this project's environment has no timm (nor the torchvision it
needs), so the lookup dies with ``ModuleNotFoundError`` before reaching our trainer. Only
when ``import timm`` fails, the launcher registers stub ``timm`` modules whose names
resolve to placeholders: the Primus/EVA modules then import (they use timm's classes only
as default arguments), and using one of them raises a clear ``ImportError``. Where timm
imports, nothing is changed and the launcher is the plain console script.

Two more things the launcher does, both only to save start-up time on small jobs:

- ``COMMAND ARGS... --then COMMAND ARGS...`` runs several commands one after the other in
  one process (stopping at the first that fails), so that e.g. ``train`` and ``predict``
  import torch and nnU-Net once: about 7 s per command.
- The planning commands (:data:`PLANNING_COMMANDS`) get ``fork`` worker pools where
  nnU-Net asks for ``spawn``: a spawned worker is a fresh interpreter that imports torch
  and nnU-Net again, about 5.5 s of a 16 s plan of a small 2D dataset (three pools:
  integrity check, fingerprint, preprocessing). ``spawn`` guards against forking a process
  that holds CUDA or a running torch thread pool; planning starts neither in the parent.
  Fork and spawn wrote byte-identical plans and preprocessed data on the demo's BUSI fold.

The module stays free of heavy imports: nnU-Net (and torch) are imported by the chosen
entry point only.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types
from importlib.metadata import entry_points

# launcher command -> nnU-Net console script (from nnunetv2's installed entry_points.txt).
COMMANDS = {
    "plan": "nnUNetv2_plan_and_preprocess",
    "extract_fingerprint": "nnUNetv2_extract_fingerprint",
    "plan_experiment": "nnUNetv2_plan_experiment",
    "preprocess": "nnUNetv2_preprocess",
    "move_plans": "nnUNetv2_move_plans_between_datasets",
    "train": "nnUNetv2_train",
    "predict": "nnUNetv2_predict",
    "evaluate": "nnUNetv2_evaluate_folder",
}

# Commands that fingerprint, plan and preprocess on the CPU: their worker pools fork.
PLANNING_COMMANDS = ("plan", "extract_fingerprint", "plan_experiment", "preprocess", "verify")

# Separates the commands of one launcher run.
THEN = "--then"

# Not a console script: nnU-Net's dataset integrity check alone (``verify -d ID [-np N]``),
# without the fingerprint extraction that nnUNetv2_extract_fingerprint runs after it.
EXTRA_COMMANDS = ("verify",)

STUB_MESSAGE = (
    "timm is not installed (or does not import) in this environment; medaug.nnunet.cli replaced it by a stub so "
    "that nnU-Net's trainer lookup works. Architectures built on timm (Primus, EVA) cannot be used here."
)


class _TimmPlaceholder:
    """Stands for any timm object; fails loudly as soon as it is actually used."""

    def __init__(self, *args, **kwargs):
        raise ImportError(STUB_MESSAGE)


class _StubModule(types.ModuleType):
    """A package whose every public attribute is :class:`_TimmPlaceholder`."""

    def __getattr__(self, name: str):
        # Dunder look-ups (``__file__``, ``__wrapped__``...) must keep failing: nnU-Net's
        # external-trainer search reads ``getattr(module, "__file__", None)`` for every
        # module in sys.modules, and a placeholder there would crash it.
        if name.startswith("__"):
            raise AttributeError(name)
        return _TimmPlaceholder


class _TimmStubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves :class:`_StubModule` for ``timm`` and every ``timm.*`` submodule."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "timm" or fullname.startswith("timm."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name, STUB_MESSAGE)
        module.__path__ = []  # a package, so that ``from timm.layers import X`` resolves
        module.__file__ = None
        return module

    def exec_module(self, module):
        pass


def timm_imports() -> bool:
    """True when the real timm (and what it imports) loads."""
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


def install_timm_stub_if_missing() -> bool:
    """Register the timm stub when the real timm does not import; returns whether it did."""
    if any(isinstance(finder, _TimmStubFinder) for finder in sys.meta_path):
        return True
    if timm_imports():
        return False
    # A half-imported timm (e.g. present but its torchvision missing) must not shadow the stub.
    for name in [n for n in sys.modules if n == "timm" or n.startswith("timm.")]:
        del sys.modules[name]
    sys.meta_path.insert(0, _TimmStubFinder())
    return True


def _entry_point(script: str):
    matches = entry_points(group="console_scripts", name=script)
    if not matches:
        raise SystemExit(f"medaug.nnunet.cli: console script {script} not found; is nnunetv2 installed?")
    return next(iter(matches)).load()


def verify_entry() -> None:
    """``verify -d ID [-np N]``: nnU-Net's integrity check of a raw dataset."""
    import argparse

    parser = argparse.ArgumentParser(prog="medaug.nnunet.cli verify")
    parser.add_argument("-d", type=int, required=True, help="dataset id")
    parser.add_argument("-np", type=int, default=None, help="processes (default: nnUNet_def_n_proc)")
    args = parser.parse_args()

    from nnunetv2.configuration import default_num_processes
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    from nnunetv2.paths import nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name

    folder = os.path.join(nnUNet_raw, convert_id_to_dataset_name(args.d))
    verify_dataset_integrity(folder, args.np or default_num_processes)


@contextlib.contextmanager
def fork_worker_pools():
    """While open, ``multiprocessing.get_context("spawn")`` returns the fork context (see the
    module docstring); other start methods are left alone."""
    import multiprocessing

    stock = multiprocessing.get_context
    multiprocessing.get_context = lambda method=None: stock("fork" if method == "spawn" else method)
    try:
        yield
    finally:
        multiprocessing.get_context = stock


def split_commands(argv: list[str]) -> list[list[str]]:
    """``[COMMAND, ARGS..., "--then", COMMAND, ARGS...]`` -> one list per command."""
    commands = [[]]
    for arg in argv:
        if arg == THEN:
            commands.append([])
        else:
            commands[-1].append(arg)
    return commands


def main(argv: list[str] | None = None) -> int:
    """Run the nnU-Net console script for ``argv[0]`` with ``argv[1:]`` as its arguments;
    ``--then`` starts the next command, run only if the previous one succeeded."""
    argv = sys.argv[1:] if argv is None else list(argv)
    known = [*COMMANDS, *EXTRA_COMMANDS]
    commands = split_commands(argv)
    for command in commands:
        if not command or command[0] not in known:
            given = command[0] if command else "nothing"
            print(
                f"usage: python -m medaug.nnunet.cli {{{'|'.join(known)}}} ARGS... [{THEN} COMMAND ARGS...]\n"
                f"(got {given})",
                file=sys.stderr,
            )
            return 2
    if install_timm_stub_if_missing():
        print("medaug.nnunet.cli: timm missing, using a stub for nnU-Net's trainer lookup", file=sys.stderr)
    for command, *args in commands:
        script = COMMANDS.get(command, f"medaug.nnunet.cli {command}")
        entry = verify_entry if command == "verify" else _entry_point(script)
        if len(commands) > 1:
            print(f"medaug.nnunet.cli: {script} {' '.join(args)}", file=sys.stderr, flush=True)
        # nnU-Net's entry points parse sys.argv themselves.
        sys.argv = [script, *args]
        with fork_worker_pools() if command in PLANNING_COMMANDS else contextlib.nullcontext():
            result = entry()
        if isinstance(result, int) and result != 0:
            return result
    return 0


# Processes that multiprocessing spawns re-import the main module as __mp_main__. Should one
# of them reach timm, it needs the stub too; the cheap spec look-up keeps clusters where timm
# is installed from importing it in every worker.
if __name__ == "__mp_main__" and importlib.util.find_spec("timm") is None:
    install_timm_stub_if_missing()

if __name__ == "__main__":
    sys.exit(main())
