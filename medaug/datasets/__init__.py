"""Adapters that read each public dataset exactly as it is distributed.

Every adapter has ``cases()`` (list and cross-check files: missing masks, duplicates,
empty folders) and a loader that validates what it reads. Problems raise
:class:`medaug.errors.DatasetError` naming the file.
"""

from __future__ import annotations

from medaug.datasets.busi import BusiDataset
from medaug.datasets.classification import BusiClassification, ClassTreeDataset
from medaug.datasets.msd import MsdDataset
from medaug.datasets.nuclei import NucleiDataset


def segmentation_dataset(entry: dict) -> BusiDataset | MsdDataset:
    """Adapter for a ``datasets`` config entry of format busi or msd."""
    adapters = {"busi": BusiDataset, "msd": MsdDataset}
    return adapters[entry["format"]](**entry)


def nuclei_dataset(entry: dict) -> NucleiDataset:
    return NucleiDataset(**entry)


def classification_dataset(entry: dict) -> ClassTreeDataset | BusiClassification:
    adapters = {"class_tree": ClassTreeDataset, "busi": BusiClassification}
    return adapters[entry["format"]](**entry)
