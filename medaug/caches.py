"""Third-party caches under the run's own folder, not the user's home.

matplotlib, imageio, torch's inductor and triton, Hugging Face and Snakemake (through
XDG) each keep a cache, by default under ``~``. A shared cluster home is small and slow,
and a pipeline should not leave traces outside its working directory, so every run
points them at ``<working directory>/.cache/<tool>``. A variable the user set is kept.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR = ".cache"
CACHE_VARIABLES = {
    "MPLCONFIGDIR": "matplotlib",
    "IMAGEIO_USERDIR": "imageio",
    "TORCHINDUCTOR_CACHE_DIR": "torchinductor",
    "TRITON_CACHE_DIR": "triton",
    "HF_HOME": "huggingface",
    "XDG_CACHE_HOME": "xdg",
}


def redirect_caches(root: str | Path | None = None) -> dict[str, str]:
    """Point each cache variable not set already at a folder under ``root`` (default
    ``./.cache``); return the variables as they now are."""
    root = Path(root if root is not None else CACHE_DIR).resolve()
    for variable, folder in CACHE_VARIABLES.items():
        os.environ.setdefault(variable, str(root / folder))
    return {variable: os.environ[variable] for variable in CACHE_VARIABLES}
