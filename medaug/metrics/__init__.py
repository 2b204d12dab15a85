"""Metrics shared by the papers: ``segmentation`` (per-case Dice, precision, recall, HD95),
``nuclei`` (the HoVer-Net protocol: Dice, AJI, PQ, F_d, F_c) and ``image_quality``."""
