"""Train one downstream segmenter variant (both protocols) and score the fold's test cases.

Standalone: python scripts/train_segmenter.py results/diffboost/spleen 0 baseline 3 out_dir [--config config.yaml]
"""

import json

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.io import read_json
from medaug.logs import run_job
from medaug.pipeline import load_config, segmenter_settings
from medaug.segmentation import Variant, train_and_evaluate


def main(prepared, splits_file, synthetic, fold, seed, settings, metrics_tsv, record_json, log=None, threads=None):
    def job():
        splits = read_json(splits_file)
        variant = Variant(**settings["variant"])
        metrics, record = train_and_evaluate(
            prepared, splits, fold, variant, settings["settings"], settings["image_size"], seed, synthetic
        )
        metrics.to_csv(metrics_tsv, sep="\t", index=False)
        with open(record_json, "w") as handle:
            json.dump(record, handle, indent=2)

    run_job(job, log, threads)


if "snakemake" in globals():
    main(
        snakemake.input.prepared,
        snakemake.input.splits,
        snakemake.input.get("synthetic"),
        int(snakemake.wildcards.fold),
        int(snakemake.wildcards.seed),
        snakemake.params.settings,
        snakemake.output.metrics,
        snakemake.output.record,
        snakemake.log[0],
        snakemake.threads,
    )
elif __name__ == "__main__":
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset_dir", help="results/diffboost/<dataset>")
    parser.add_argument("fold", type=int)
    parser.add_argument("variant")
    parser.add_argument("seed", type=int)
    parser.add_argument("out_dir")
    parser.add_argument("--config", default="config.yaml")
    args = parser.parse_args()
    base = Path(args.dataset_dir)
    settings = segmenter_settings(load_config(args.config), base.name, args.variant)
    ratio = settings["variant"]["ratio"]
    synthetic = base / f"fold{args.fold}" / "synthetic" / f"ratio{ratio}" if ratio else None
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    main(
        base / "prepared",
        base / "splits.json",
        synthetic,
        args.fold,
        args.seed,
        settings,
        out / "metrics.tsv",
        out / "training.json",
    )
