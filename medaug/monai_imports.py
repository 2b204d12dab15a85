"""Importing MONAI at the cost of what a job uses."""

from __future__ import annotations

import sys


def import_monai() -> None:
    """Import MONAI without transformers unless that is loaded already: ``import monai``
    loads every network, and TransCheX's optional BERT import costs about 3.5 s of each
    job for a model no stage builds. MONAI records the failed optional import and raises
    only if TransCheX is built; transformers stays importable afterwards."""
    if "monai" in sys.modules or "transformers" in sys.modules:
        return
    sys.modules["transformers"] = None  # makes `import transformers` raise ImportError
    try:
        import monai  # noqa: F401
    finally:
        del sys.modules["transformers"]
