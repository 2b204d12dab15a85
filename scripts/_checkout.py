"""Put this checkout's ``medaug`` package first on ``sys.path``.

Snakemake adds ``scripts/`` to a script's path, and Python does so when a script runs
standalone, so ``import _checkout`` works in both modes: in the venv, and in per-rule
conda envs or cluster jobs where medaug is not installed.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
