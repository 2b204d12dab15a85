"""nnU-Net arm: train on real (+ synthetic at one ratio) slices, predict and score the test cases.

Standalone: python scripts/nnunet_train.py results/diffboost/spleen 0 clean 2 workdir metrics.tsv [--config config.yaml]
"""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.io import read_json
from medaug.logs import run_job
from medaug.nnunet_arm import train_ratio
from medaug.pipeline import load_config, nnunet_settings


def main(prepared, splits_file, synthetic, fold, protocol, ratio, workdir, settings, metrics_tsv, log=None, threads=2):
    def job():
        metrics = train_ratio(
            prepared,
            read_json(splits_file),
            fold,
            protocol,
            ratio,
            synthetic,
            workdir,
            settings["trainer"],
            settings["trainer_settings"],
            threads=threads,
        )
        metrics.to_csv(metrics_tsv, sep="\t", index=False)

    run_job(job, log, threads)


if "snakemake" in globals():
    main(
        snakemake.input.prepared,
        snakemake.input.splits,
        snakemake.input.get("synthetic"),
        int(snakemake.wildcards.fold),
        snakemake.wildcards.protocol,
        int(snakemake.wildcards.ratio),
        snakemake.params.workdir,
        snakemake.params.settings,
        snakemake.output.metrics,
        snakemake.log[0],
        snakemake.threads,
    )
elif __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset_dir", help="results/diffboost/<dataset>")
    parser.add_argument("fold", type=int)
    parser.add_argument("protocol", choices=["paper", "clean"])
    parser.add_argument("ratio", type=int)
    parser.add_argument("workdir")
    parser.add_argument("metrics")
    parser.add_argument("--config", default="config.yaml")
    args = parser.parse_args()
    base = args.dataset_dir.rstrip("/")
    synthetic = f"{base}/fold{args.fold}/synthetic/ratio{args.ratio}" if args.ratio else None
    settings = nnunet_settings(load_config(args.config))
    main(
        f"{base}/prepared",
        f"{base}/splits.json",
        synthetic,
        args.fold,
        args.protocol,
        args.ratio,
        args.workdir,
        settings,
        args.metrics,
    )
