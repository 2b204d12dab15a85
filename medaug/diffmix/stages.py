"""DiffMix's stage specs: for each rule, how its job's inputs, outputs and settings follow from
the config and the wildcards. The work of each stage is defined beside its function
(``label_maps``, ``generator``, ``sampling``, ``downstream``, ``report``)."""

from __future__ import annotations

from medaug.diffmix import params, paths
from medaug.paths import fill
from medaug.stage import Spec

CHECKS = (params.config_problems,)


def _data(w: dict) -> dict:
    return {"prepared": fill(paths.PREPARED, **w), "splits": fill(paths.SPLITS, **w)}


LABEL_MAPS = Spec(
    name="diffmix_label_maps",
    description="Write one kind of virtual label map (GradMix balancing, or enlarging) for every training tile, "
    "with donor nuclei from the training tiles only, and the class counts before and after.",
    wildcards=("dataset", "map_kind"),
    inputs=lambda config, w: _data(w),
    outputs=lambda config, w: {"maps": fill(paths.VIRTUAL_MAPS, **w)},
    settings=lambda config, w: params.label_map_settings(config),
    checks=CHECKS,
)

GENERATOR = Spec(
    name="diffmix_train_generator",
    description="Train DiffMix's semantic diffusion model on the fold's training tiles (both stages, "
    "resumable), or load the dataset's official checkpoint.",
    wildcards=("dataset",),
    inputs=lambda config, w: _data(w),
    outputs=lambda config, w: {"generator": fill(paths.GENERATOR, **w)},
    settings=lambda config, w: {
        **params.generator_settings(config, w["dataset"]),
        "state_dir": fill(paths.GENERATOR_STATE, **w),
    },
    checks=CHECKS,
)

SYNTHESIS = Spec(
    name="diffmix_sample",
    description="Re-render crops of the training tiles under one kind of virtual map (SDEdit) and write them "
    "as HoVer-Net patches with a manifest.",
    wildcards=("dataset", "map_kind"),
    inputs=lambda config, w: {
        "prepared": fill(paths.PREPARED, **w),
        "generator": fill(paths.GENERATOR, **w),
        "maps": fill(paths.VIRTUAL_MAPS, **w),
    },
    outputs=lambda config, w: {"synthetic": fill(paths.SYNTHETIC, **w)},
    settings=lambda config, w: params.synthesis_settings(config),
    checks=CHECKS,
)


def hovernet_inputs(config: dict, w: dict) -> dict:
    inputs = _data(w)
    if w["arm"] == params.GRADMIX:
        inputs["maps"] = fill(paths.VIRTUAL_MAPS, **w, map_kind="balancing")
    if w["arm"] == params.DIFFMIX:
        kinds = config[params.PAPER]["hovernet"]["map_kinds"]
        inputs["synthetic"] = [fill(paths.SYNTHETIC, **w, map_kind=kind) for kind in kinds]
    return inputs


HOVERNET = Spec(
    name="diffmix_hovernet",
    description="Train HoVer-Net on the fold's training patches (plus an arm's synthetic patches) and score the "
    "test tiles: Dice, AJI, DQ/SQ/PQ, F_d and F_c per type.",
    wildcards=("dataset", "arm", "ratio", "seed"),
    inputs=hovernet_inputs,
    outputs=lambda config, w: {"metrics": fill(paths.HOVERNET_METRICS, **w)},
    settings=lambda config, w: params.hovernet_settings(config, w["arm"]),
    checks=CHECKS,
)

REPORT = Spec(
    name="diffmix_report",
    description="DiffMix's tables and figures: nuclei per class in the real and virtual maps, HoVer-Net's "
    "metrics per arm and ratio, and real / virtual map / synthetic patch grids.",
    inputs=lambda config, w: {
        "prepared": [fill(paths.PREPARED, dataset=d) for d in config[params.PAPER]["datasets"]],
        "maps": [fill(paths.VIRTUAL_MAPS, **job) for job in params.label_map_jobs(config)],
        "metrics": [fill(paths.HOVERNET_METRICS, **run) for run in params.hovernet_runs(config)],
        "synthetic": [
            fill(paths.SYNTHETIC, dataset=d, map_kind=k)
            for d in config[params.PAPER]["datasets"]
            for k in params.synthesis_kinds(config)
        ],
    },
    outputs=lambda config, w: {"tables": paths.TABLES, "figures": paths.FIGURES},
    settings=lambda config, w: params.report_settings(config),
    checks=CHECKS,
)
