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
TABLES = RESULTS + "/tables"
