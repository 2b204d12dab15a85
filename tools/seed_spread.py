"""Every demo claim about a trained model, measured over master seeds and CPU float paths.

    .venv/bin/python tools/seed_spread.py --papers dcube --seeds 0 1 2 3 4 \\
        --float-paths native sse41 --workdir /tmp/spread --table docs/demo-seed-spread.tsv

Each (float path, seed) is the demo of the named papers, run by Snakemake in its own working
directory. Seed N sets the master seed to N, which draws the stand-in data, the splits and
the generators' initial weights and batches, and moves every sampling seed N past its
configured value; seed 0 is the demo as configured. A float path is a set of environment variables under
which oneDNN and ATen take the kernels of another CPU:

- ``native``: none, the machine's best kernels;
- ``avx2``: those of a CPU without AVX-512 or AMX (on an AVX2-only machine, the same as native);
- ``sse41``: those of a CPU without AVX.

Finished runs are kept, so a second call only adds what is missing. Every claim of those
papers (``medaug/<paper>/claims.py``) is read from every run into ``--table`` (one row per
claim, path and seed; rows of other papers, paths or seeds in it are kept), and the
min / median / max per claim over all its rows is printed, with its bar.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from medaug import claims  # noqa: E402
from medaug.papers import PAPERS, demo_claims, validate_config  # noqa: E402

FLOAT_PATHS = {
    "native": {},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default"},
}
# The sampling seeds besides the master seed (DiffMix samples with the master seed).
SAMPLING_SEEDS = (("diffboost", "sampling"), ("dcube", "synthesis"))
COLUMNS = ["paper", "claim", "bar", "asserted", "float_path", "cpu", "cpu_capability", "seed", "value", "minutes"]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def capability(env: dict) -> str:
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip()


def seeded_config(config: dict, seed: int) -> dict:
    """``config`` with its master seed set to ``seed`` and every sampling seed moved by ``seed``."""
    defaults = validate_config(config)
    seeded = {**config, "seed": seed}
    for paper, section in SAMPLING_SEEDS:
        block = dict(seeded.get(paper, {}))
        block[section] = {**block.get(section, {}), "seed": defaults[paper][section]["seed"] + seed}
        seeded[paper] = block
    return seeded


def run_demo(workdir: Path, papers: list[str], seed: int, env: dict, cores: int, config: Path) -> float:
    """The demo of ``papers`` at ``seed`` in ``workdir``; minutes of wall time (about 0 if it was done)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "config.yaml"
    config_file.write_text(yaml.safe_dump(seeded_config(yaml.safe_load(config.read_text()), seed), sort_keys=False))
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), *papers]
    command += ["--cores", str(cores), "--directory", str(workdir), "--configfile", str(config_file)]
    start = time.perf_counter()
    with open(workdir / "seed_spread.log", "a") as log:
        result = subprocess.run(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        sys.exit(f"the demo failed in {workdir}: see {workdir / 'seed_spread.log'}")
    return (time.perf_counter() - start) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", nargs="+", choices=PAPERS, default=list(PAPERS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4], help="none: only summarize")
    parser.add_argument("--float-paths", nargs="+", choices=FLOAT_PATHS, default=["native"])
    parser.add_argument(
        "--workdir", type=Path, default=REPO / "results" / "seed_spread", help="one folder per path and seed inside"
    )
    parser.add_argument("--table", type=Path, required=True, help="TSV of every value; existing rows are kept")
    parser.add_argument("--markdown", type=Path, help="also write the summary here, as a Markdown table")
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument(
        "--from-run",
        type=Path,
        help="read the claims of this finished demo run (e.g. the test suite's) as the one seed and path given",
    )
    args = parser.parse_args()
    if args.from_run and (len(args.seeds) != 1 or len(args.float_paths) != 1):
        parser.error("--from-run takes exactly one seed and one float path")

    table = pd.read_csv(args.table, sep="\t") if args.table.exists() else pd.DataFrame(columns=COLUMNS)
    print(f"CPU: {cpu_model()}", flush=True)
    for path in args.float_paths:
        env = {**os.environ, **FLOAT_PATHS[path]}
        taken = capability(env)
        for seed in args.seeds:
            if args.from_run:
                workdir, minutes = args.from_run, float("nan")
            else:
                workdir = args.workdir / path / f"seed{seed}"
                minutes = run_demo(workdir, args.papers, seed, env, args.cores, args.config)
            this_run = table.paper.isin(args.papers) & (table.float_path == path) & (table.seed.astype(int) == seed)
            if not minutes >= 0.5 and this_run.any():  # nothing was left to run: keep the minutes it took
                minutes = table[this_run].minutes.max()
            rows = []
            for paper in args.papers:
                for claim in demo_claims(paper):
                    rows.append([paper, claim.name, claim.describe(), claim.asserted, path, cpu_model(), taken, seed])
                    rows[-1] += [round(claim.value(workdir), 4), round(minutes, 1)]
            fresh = pd.DataFrame(rows, columns=COLUMNS)
            keep = ~this_run
            table = pd.concat([table[keep], fresh], ignore_index=True)
            table.to_csv(args.table, sep="\t", index=False)
            print(f"{path} ({taken}) seed {seed}: {minutes:.1f} min", flush=True)
    print(claims.summarize(table, demo_claims()).to_string(index=False))
    if args.markdown:
        args.markdown.write_text(claims.summary_markdown(table, demo_claims()))


if __name__ == "__main__":
    main()
