"""nnU-Net arm: write the real-only dataset of one fold and protocol and plan it.

Standalone: python scripts/nnunet_plan.py results/diffboost/spleen 0 clean workdir plans.json
"""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.io import read_json
from medaug.logs import run_job
from medaug.nnunet_arm import plan_real


def main(prepared, splits_file, fold, protocol, workdir, plans, log=None, threads=2):
    run_job(lambda: plan_real(prepared, read_json(splits_file), fold, protocol, workdir, plans, threads), log, threads)


if "snakemake" in globals():
    main(
        snakemake.input.prepared,
        snakemake.input.splits,
        int(snakemake.wildcards.fold),
        snakemake.wildcards.protocol,
        snakemake.params.workdir,
        snakemake.output.plans,
        snakemake.log[0],
        snakemake.threads,
    )
elif __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset_dir", help="results/diffboost/<dataset>")
    parser.add_argument("fold", type=int)
    parser.add_argument("protocol", choices=["paper", "clean"])
    parser.add_argument("workdir")
    parser.add_argument("plans")
    args = parser.parse_args()
    base = args.dataset_dir.rstrip("/")
    main(f"{base}/prepared", f"{base}/splits.json", args.fold, args.protocol, args.workdir, args.plans)
