"""Demo datasets written in the real datasets' on-disk formats.

Each demo folder name is the name of the folder the real dataset unpacks to, so a user
switches to real data by changing ``datasets.<name>.root`` and nothing else.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from medaug import paths
from medaug.stage import Job, Spec, Stage

log = logging.getLogger(__name__)

# Demo folder name -> (key under config `demo`, "module:writer"). Writers are imported
# on use so that the Snakefile can read this table without numpy or nibabel.
DEMO_DATASETS = {
    "Dataset_BUSI_with_GT": ("busi", "ultrasound:write_busi_demo"),
    "Task09_Spleen": ("spleen", "volumes:write_spleen_demo"),
    "Task05_Prostate": ("prostate", "volumes:write_prostate_demo"),
    "CoNSeP": ("consep", "nuclei:write_consep_demo"),
    "GLySAC": ("glysac", "nuclei:write_glysac_demo"),
    "DCube_pancreas": ("pancreas", "classification:write_class_tree_demo"),
}


def write_demo_dataset(folder: str | Path, seed: int, params: dict) -> Path:
    """Write the demo dataset named by ``folder``'s last component, atomically.

    ``params`` is the matching block of the config's ``demo`` section.
    """
    folder = Path(folder)
    if folder.name not in DEMO_DATASETS:
        raise ValueError(f"{folder}: no demo generator for '{folder.name}' (known: {', '.join(DEMO_DATASETS)})")
    from medaug.io import atomic_output
    from medaug.seeds import keyed_rng

    module, function = DEMO_DATASETS[folder.name][1].split(":")
    writer = getattr(importlib.import_module(f"medaug.demo.{module}"), function)
    with atomic_output(folder, directory=True) as tmp:
        writer(tmp, keyed_rng(seed, folder.name), params)
    n_files = sum(1 for p in folder.rglob("*") if p.is_file())
    log.info("wrote demo dataset %s (%d files, seed %d)", folder, n_files, seed)
    return folder


def demo_settings(config: dict, folder: str) -> dict:
    """The master seed and the config's ``demo`` block of one demo folder."""
    key, _ = DEMO_DATASETS[folder]
    return {"seed": config["seed"], "params": config["demo"][key]}


def _write(job: Job) -> None:
    write_demo_dataset(job.outputs["root"], job.settings["seed"], job.settings["params"])


DEMO = Stage(
    Spec(
        name="make_demo_dataset",
        description="Write one demo dataset, in its real on-disk format, from the config's demo block.",
        wildcards=("demo_folder",),
        inputs=lambda config, w: {},
        outputs=lambda config, w: {"root": paths.fill(paths.DEMO_DATASET, **w)},
        settings=lambda config, w: demo_settings(config, w["demo_folder"]),
    ),
    _write,
)
demo_entry = DEMO.entry
