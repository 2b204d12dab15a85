"""Write one demo dataset, in its real on-disk format, from the config's `demo` block.

Standalone: python scripts/make_demo_dataset.py resources/demo/Task09_Spleen [--config config.yaml]
"""

from pathlib import Path

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.demo import write_demo_dataset
from medaug.logs import run_job
from medaug.pipeline import demo_settings, load_config


def main(folder, seed, params, log=None):
    run_job(lambda: write_demo_dataset(folder, seed, params), log)


if "snakemake" in globals():
    main(snakemake.output.root, log=snakemake.log[0], **snakemake.params.settings)
elif __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="output folder; its name picks the generator, e.g. Task09_Spleen")
    parser.add_argument("--config", default="config.yaml")
    args = parser.parse_args()
    main(args.folder, **demo_settings(load_config(args.config), Path(args.folder).name))
