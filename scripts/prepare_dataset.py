"""Read a dataset through its adapter and write a paper's 2D representation of it.

diffboost: normalised slices; diffmix: HoVer-Net patches; dcube: resized grey images.
Standalone: python scripts/prepare_dataset.py diffboost spleen results/diffboost/spleen/prepared
"""

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.logs import run_job
from medaug.pipeline import REPRESENTATIONS, load_config, prepare_settings
from medaug.preprocess import prepare_classification, prepare_nuclei, prepare_segmentation

PREPARE = {"segmentation": prepare_segmentation, "nuclei": prepare_nuclei, "classification": prepare_classification}


def main(paper, out_dir, settings, log=None):
    prepare = PREPARE[REPRESENTATIONS[paper]]
    run_job(lambda: prepare(out_dir=out_dir, **settings), log)


if "snakemake" in globals():
    main(snakemake.wildcards.paper, snakemake.output.prepared, snakemake.params.settings, snakemake.log[0])
elif __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paper", choices=sorted(REPRESENTATIONS))
    parser.add_argument("dataset")
    parser.add_argument("out_dir")
    parser.add_argument("--config", default="config.yaml")
    args = parser.parse_args()
    main(args.paper, args.out_dir, prepare_settings(load_config(args.config), args.paper, args.dataset))
