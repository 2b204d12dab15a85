"""Fine-tune DiffBoost's ControlNet on one fold's development slices (resumable).

Standalone:
    python scripts/finetune_controlnet.py spleen 0 results/diffboost/spleen out_dir state_dir [--config config.yaml]
"""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.diffboost import finetune_controlnet
from medaug.io import read_json
from medaug.logs import run_job
from medaug.pipeline import controlnet_settings, load_config


def main(prepared, conditions, splits_file, fold, out_dir, state_dir, settings, log=None, threads=None):
    def job():
        splits = read_json(splits_file)
        finetune_controlnet(prepared, conditions, splits, fold, out_dir=out_dir, state_dir=state_dir, **settings)

    run_job(job, log, threads)


if "snakemake" in globals():
    main(
        snakemake.input.prepared,
        snakemake.input.conditions,
        snakemake.input.splits,
        int(snakemake.wildcards.fold),
        snakemake.output.model,
        snakemake.params.state_dir,
        snakemake.params.settings,
        snakemake.log[0],
        snakemake.threads,
    )
elif __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("fold", type=int)
    parser.add_argument("dataset_dir", help="results/diffboost/<dataset> (prepared/, conditions/, splits.json)")
    parser.add_argument("out_dir")
    parser.add_argument("state_dir")
    parser.add_argument("--config", default="config.yaml")
    args = parser.parse_args()
    base = args.dataset_dir.rstrip("/")
    settings = controlnet_settings(load_config(args.config), args.dataset)
    main(
        f"{base}/prepared",
        f"{base}/conditions",
        f"{base}/splits.json",
        args.fold,
        args.out_dir,
        args.state_dir,
        settings,
    )
