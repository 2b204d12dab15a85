"""One way to run a pipeline stage: as a Snakemake job or standalone, with the same arguments.

A :class:`Spec` says how a rule's inputs, outputs and settings follow from the config and
the job's wildcards (through the path templates of :mod:`medaug.paths` and the papers'
``paths`` modules); the rule reads it. A :class:`Stage` pairs a spec with the function
that does the work, beside that function. ``scripts/<rule>.py`` hands a Snakemake job to
:meth:`Stage.run_snakemake`; :meth:`Stage.entry` is the console script of the same stage
(``[project.scripts]`` in pyproject.toml), e.g. ``medaug-finetune-controlnet spleen 0
--config config.yaml``, which resolves the very paths the rule would and runs the job in
the current directory.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field

from medaug.logs import run_job

Paths = dict[str, object]


@dataclass(frozen=True)
class Job:
    """What one run of a stage gets: named inputs and outputs, settings, wildcards, threads."""

    inputs: Paths
    outputs: Paths
    settings: dict
    wildcards: dict[str, str]
    threads: int | None = None

    def number(self, wildcard: str) -> int:
        """A numeric wildcard (fold, ratio, seed) as an int."""
        return int(self.wildcards[wildcard])


def _no_settings(config: dict, wildcards: dict) -> dict:
    return {}


@dataclass(frozen=True)
class Spec:
    """What a rule needs of a stage, and nothing heavy: how the job's inputs, outputs and
    settings follow from the config and its wildcards. The Snakefile reads these."""

    name: str
    description: str
    inputs: Callable[[dict, dict], Paths]
    outputs: Callable[[dict, dict], Paths]
    settings: Callable[[dict, dict], dict] = _no_settings
    wildcards: tuple[str, ...] = ()
    checks: tuple[Callable[[dict], list[str]], ...] = field(default=())

    def job(self, config: dict, wildcards: dict[str, str], threads: int | None = None) -> Job:
        """The job the rule would run for ``wildcards`` under ``config``."""
        return Job(
            self.inputs(config, wildcards),
            self.outputs(config, wildcards),
            self.settings(config, wildcards),
            wildcards,
            threads,
        )


@dataclass(frozen=True)
class Stage:
    """A spec and the work it runs, defined beside that work (so that each job imports
    only its own tool family)."""

    spec: Spec
    run: Callable[[Job], object]

    def run_snakemake(self, snakemake) -> object:
        """Run the job Snakemake hands to ``scripts/<rule>.py``; its log is the rule's first log."""
        job = Job(
            inputs=dict(snakemake.input.items()),
            outputs=dict(snakemake.output.items()),
            settings=snakemake.params.get("settings", {}),
            wildcards=dict(snakemake.wildcards.items()),
            threads=snakemake.threads,
        )
        return run_job(lambda: self.run(job), snakemake.log[0] if snakemake.log else None, snakemake.threads)

    def entry(self, argv: list[str] | None = None) -> None:
        """Console script: ``WILDCARD... [--config FILE ...] [--threads N] [--log FILE]``."""
        from medaug.config import load_config

        spec = self.spec
        parser = argparse.ArgumentParser(prog=f"medaug-{spec.name.replace('_', '-')}", description=spec.description)
        for name in spec.wildcards:
            parser.add_argument(name)
        parser.add_argument(
            "--config", nargs="+", default=["config.yaml"], help="config files, each laid over the last"
        )
        parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
        parser.add_argument("--log", default=None, help="also write the log to this file")
        args = parser.parse_args(argv)
        wildcards = {name: getattr(args, name) for name in spec.wildcards}

        def work() -> object:
            return self.run(spec.job(load_config(args.config, spec.checks), wildcards, args.threads))

        run_job(work, args.log, args.threads)
