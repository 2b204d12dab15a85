"""Make a prepared dataset's splits (patient-level folds, official or stratified
train/val/test), prove them leakage-free and write them as JSON.

Standalone: python scripts/make_splits.py diffboost spleen results/diffboost/spleen/prepared out.json
"""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.io import write_json
from medaug.logs import run_job
from medaug.pipeline import REPRESENTATIONS, load_config, split_settings
from medaug.splits import make_splits


def main(paper, dataset, prepared, out_json, settings, log=None):
    def job():
        write_json(out_json, make_splits(dataset, prepared, REPRESENTATIONS[paper], settings))

    run_job(job, log)


if "snakemake" in globals():
    main(
        snakemake.wildcards.paper,
        snakemake.wildcards.dataset,
        snakemake.input.prepared,
        snakemake.output.splits,
        snakemake.params.settings,
        snakemake.log[0],
    )
elif __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paper", choices=sorted(REPRESENTATIONS))
    parser.add_argument("dataset")
    parser.add_argument("prepared")
    parser.add_argument("out_json")
    parser.add_argument("--config", default="config.yaml")
    args = parser.parse_args()
    settings = split_settings(load_config(args.config), args.paper, args.dataset)
    main(args.paper, args.dataset, args.prepared, args.out_json, settings)
