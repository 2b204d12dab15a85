"""Dry-run cost of the paper-scale DAG: how long `snakemake --profile slurm -n` takes to plan
every dataset x fold x ratio x seed x arm of config.paper.yaml, and how many jobs it plans.

    .venv/bin/python tools/benchmark_dryrun.py [--repeats 3] [--json out.json]

Each repeat is a fresh Snakemake process (as a user types it) in an empty working directory,
so nothing is up to date and the whole DAG is planned.
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def dry_run() -> tuple[float, dict[str, int]]:
    with tempfile.TemporaryDirectory() as workdir:
        command = [sys.executable, "-m", "snakemake", "--profile", "slurm", "-n", "--quiet", "rules"]
        start = time.perf_counter()
        result = subprocess.run(command + ["--directory", workdir], cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"dry-run failed:\n{result.stdout}\n{result.stderr}")
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.M)}
    return wall, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    walls, counts = [], {}
    for _ in range(args.repeats):
        wall, counts = dry_run()
        walls.append(wall)
    for rule, count in sorted(counts.items(), key=lambda item: -item[1]):
        print(f"{rule:24s} {count:6d}")
    print(
        f"paper-scale dry-run: {counts['total']} jobs planned in {statistics.median(walls):.1f} s "
        f"(median of {len(walls)}; min {min(walls):.1f} s, max {max(walls):.1f} s)"
    )
    if args.json:
        args.json.write_text(json.dumps({"jobs": counts, "wall_s": walls}, indent=2) + "\n")


if __name__ == "__main__":
    main()
