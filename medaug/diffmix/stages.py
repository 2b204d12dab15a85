"""DiffMix's stage specs: for each rule, how its job's inputs, outputs and settings follow from
the config and the wildcards. The work of each stage is defined beside its function
(``label_maps``, ``report``)."""

from __future__ import annotations

from medaug.diffmix import params, paths
from medaug.paths import fill
from medaug.stage import Spec

CHECKS = (params.config_problems,)

LABEL_MAPS = Spec(
    name="diffmix_label_maps",
    description="Write one kind of virtual label map (GradMix balancing, or enlarging) for every training tile, "
    "with donor nuclei from the training tiles only, and the class counts before and after.",
    wildcards=("dataset", "map_kind"),
    inputs=lambda config, w: {"prepared": fill(paths.PREPARED, **w), "splits": fill(paths.SPLITS, **w)},
    outputs=lambda config, w: {"maps": fill(paths.VIRTUAL_MAPS, **w)},
    settings=lambda config, w: params.label_map_settings(config),
    checks=CHECKS,
)

REPORT = Spec(
    name="diffmix_report",
    description="DiffMix's tables: nuclei per class in the real training tiles and in each kind of virtual map.",
    inputs=lambda config, w: {"maps": [fill(paths.VIRTUAL_MAPS, **job) for job in params.label_map_jobs(config)]},
    outputs=lambda config, w: {"tables": paths.TABLES},
    settings=lambda config, w: params.report_settings(config),
    checks=CHECKS,
)
