"""Metrics shared by the papers: ``segmentation`` (per-case Dice, precision, recall, HD95)
today; nuclei and classification metrics join it with DiffMix and D-Cube."""
