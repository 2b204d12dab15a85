"""DiffMix's result-path templates (Snakemake ``{wildcard}`` syntax), the only place they are spelled."""

from __future__ import annotations

from medaug import paths

PAPER = "diffmix"
RESULTS = paths.of_paper(paths.PAPER_RESULTS, PAPER)
PREPARED = paths.of_paper(paths.PREPARED, PAPER)
SPLITS = paths.of_paper(paths.SPLITS, PAPER)
# One folder of virtual label maps per dataset and kind (balancing, enlarging): a <tile>.npz
# per training tile, edits.tsv (every replaced or added nucleus) and counts.json.
VIRTUAL_MAPS = RESULTS + "/{dataset}/virtual_maps/{map_kind}"
# The SDM per dataset: sdm/ (save_pretrained folder of the EMA weights) and meta.json; its
# resumable training state lies beside it.
GENERATOR = RESULTS + "/{dataset}/generator"
GENERATOR_STATE = RESULTS + "/{dataset}/generator_state"
# SDEdit patches per dataset and map kind: patches/<id>.npy ([P, P, 5] as HoVer-Net's
# training patches) and manifest.tsv (source tile, crop, map kind, seed).
SYNTHETIC = RESULTS + "/{dataset}/synthetic/{map_kind}"
SYNTHETIC_MANIFEST, SYNTHETIC_QUALITY = "manifest.tsv", "quality.json"  # inside SYNTHETIC
# One HoVer-Net run: metrics.json (test-set summary) and per_tile.tsv.
HOVERNET = RESULTS + "/{dataset}/hovernet/{arm}/ratio{ratio}/seed{seed}"
HOVERNET_METRICS = HOVERNET + "/metrics.json"
TABLES = RESULTS + "/tables"
FIGURES = RESULTS + "/figures"
