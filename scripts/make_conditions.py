"""Condition maps (image edges + mask contour) for every prepared DiffBoost slice.

Standalone: python scripts/make_conditions.py results/diffboost/spleen/prepared out_dir [--config config.yaml]
"""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.diffboost import write_conditions
from medaug.logs import run_job
from medaug.pipeline import condition_settings, load_config


def main(prepared, out_dir, settings, log=None):
    run_job(lambda: write_conditions(prepared, out_dir, settings["hed_weights"], settings["canny_sigma"]), log)


if "snakemake" in globals():
    main(snakemake.input.prepared, snakemake.output.conditions, snakemake.params.settings, snakemake.log[0])
elif __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared")
    parser.add_argument("out_dir")
    parser.add_argument("--config", default="config.yaml")
    args = parser.parse_args()
    main(args.prepared, args.out_dir, condition_settings(load_config(args.config)))
