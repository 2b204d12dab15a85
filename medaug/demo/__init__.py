"""Demo datasets written in the real datasets' on-disk formats.

Each demo folder name is the name of the folder the real dataset unpacks to, so a user
switches to real data by changing ``datasets.<name>.root`` and nothing else.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from pathlib import Path

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


def demo_rng(seed: int, name: str):
    """A stream that depends on the master seed and the dataset, not on run order."""
    import numpy as np

    digest = hashlib.sha256(name.encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def write_demo_dataset(folder: str | Path, seed: int, params: dict) -> Path:
    """Write the demo dataset named by ``folder``'s last component, atomically.

    ``params`` is the matching block of the config's ``demo`` section.
    """
    folder = Path(folder)
    if folder.name not in DEMO_DATASETS:
        raise ValueError(f"{folder}: no demo generator for '{folder.name}' (known: {', '.join(DEMO_DATASETS)})")
    from medaug.io import atomic_output

    module, function = DEMO_DATASETS[folder.name][1].split(":")
    writer = getattr(importlib.import_module(f"medaug.demo.{module}"), function)
    with atomic_output(folder, directory=True) as tmp:
        writer(tmp, demo_rng(seed, folder.name), params)
    n_files = sum(1 for p in folder.rglob("*") if p.is_file())
    log.info("wrote demo dataset %s (%d files, seed %d)", folder, n_files, seed)
    return folder
