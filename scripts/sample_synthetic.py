"""Sample one ratio's synthetic slices for one fold, reusing the smaller ratio's images.

Standalone:
    python scripts/sample_synthetic.py results/diffboost/spleen 0 5 out_dir [--previous dir] [--config config.yaml]
"""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.diffboost import sample_synthetic
from medaug.io import read_json
from medaug.logs import run_job
from medaug.pipeline import load_config, sampling_settings


def main(model, prepared, conditions, splits_file, fold, ratio, previous, out_dir, settings, log=None, threads=None):
    def job():
        splits = read_json(splits_file)
        sample_synthetic(model, prepared, conditions, splits, fold, ratio, previous, settings, out_dir)

    run_job(job, log, threads)


if "snakemake" in globals():
    main(
        snakemake.input.model,
        snakemake.input.prepared,
        snakemake.input.conditions,
        snakemake.input.splits,
        int(snakemake.wildcards.fold),
        int(snakemake.wildcards.ratio),
        snakemake.input.get("previous"),
        snakemake.output.synthetic,
        snakemake.params.settings,
        snakemake.log[0],
        snakemake.threads,
    )
elif __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset_dir", help="results/diffboost/<dataset>")
    parser.add_argument("fold", type=int)
    parser.add_argument("ratio", type=int)
    parser.add_argument("out_dir")
    parser.add_argument("--previous", default=None, help="the next smaller ratio's output folder")
    parser.add_argument("--config", default="config.yaml")
    args = parser.parse_args()
    base = args.dataset_dir.rstrip("/")
    main(
        f"{base}/fold{args.fold}/controlnet",
        f"{base}/prepared",
        f"{base}/conditions",
        f"{base}/splits.json",
        args.fold,
        args.ratio,
        args.previous,
        args.out_dir,
        sampling_settings(load_config(args.config)),
    )
