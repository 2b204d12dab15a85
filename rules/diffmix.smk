# DiffMix: per dataset, the virtual label maps of each kind (GradMix balancing, enlarging) and
# the semantic diffusion model (SDM) -> SDEdit patches under the virtual maps -> HoVer-Net per
# arm, ratio and seed -> tables and figures. Each rule's inputs and settings come from its
# stage in medaug/diffmix/stages.py; its paths from medaug/diffmix/paths.py.
from medaug.diffmix import params as diffmix_params
from medaug.diffmix import paths as diffmix_paths
from medaug.diffmix.stages import HOVERNET, LABEL_MAPS, SYNTHESIS
from medaug.diffmix.stages import GENERATOR as DIFFMIX_GENERATOR
from medaug.diffmix.stages import REPORT as DIFFMIX_REPORT


wildcard_constraints:
    map_kind="balancing|enlarging",
    arm=diffmix_params.ARM_PATTERN,


rule diffmix_label_maps:
    input:
        unpack(stage_inputs(LABEL_MAPS)),
    output:
        maps=directory(diffmix_paths.VIRTUAL_MAPS),
    log:
        "logs/diffmix_label_maps/{dataset}/{map_kind}.log",
    benchmark:
        "benchmarks/diffmix_label_maps/{dataset}/{map_kind}.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=scaled_by_attempt(4000),
        runtime=scaled_by_attempt(30),
    params:
        settings=stage_settings(LABEL_MAPS),
    script:
        "../scripts/diffmix_label_maps.py"


rule diffmix_train_generator:
    input:
        unpack(stage_inputs(DIFFMIX_GENERATOR)),
    output:
        # protected: a finished model is write-protected, so that a changed parameter or
        # script cannot silently retrain it (delete the folder to retrain on purpose).
        generator=protected(directory(diffmix_paths.GENERATOR)),
    log:
        "logs/diffmix_train_generator/{dataset}.log",
    benchmark:
        "benchmarks/diffmix_train_generator/{dataset}.tsv"
    # Before other ready jobs: the SDM heads the longest chain.
    priority: 10
    conda:
        "../envs/diffusion.yaml"
    threads: config["threads"]["diffusion"]
    resources:
        gpu=1,
        mem_mb=scaled_by_attempt(16000),
        runtime=scaled_by_attempt(2880),
    params:
        # includes the resumable state folder, which lies beside the declared output
        settings=stage_settings(DIFFMIX_GENERATOR),
    script:
        "../scripts/diffmix_train_generator.py"


rule diffmix_sample:
    input:
        unpack(stage_inputs(SYNTHESIS)),
    output:
        synthetic=directory(diffmix_paths.SYNTHETIC),
    log:
        "logs/diffmix_sample/{dataset}/{map_kind}.log",
    benchmark:
        "benchmarks/diffmix_sample/{dataset}/{map_kind}.tsv"
    conda:
        "../envs/diffusion.yaml"
    threads: config["threads"]["diffusion"]
    resources:
        gpu=1,
        mem_mb=scaled_by_attempt(16000),
        runtime=scaled_by_attempt(720),
    params:
        settings=stage_settings(SYNTHESIS),
    script:
        "../scripts/diffmix_sample.py"


rule diffmix_hovernet:
    input:
        unpack(stage_inputs(HOVERNET)),
    output:
        metrics=diffmix_paths.HOVERNET_METRICS,
    log:
        "logs/diffmix_hovernet/{dataset}/{arm}/ratio{ratio}/seed{seed}.log",
    benchmark:
        "benchmarks/diffmix_hovernet/{dataset}/{arm}/ratio{ratio}/seed{seed}.tsv"
    wildcard_constraints:
        ratio=r"\d+(?:\.\d+)?",  # synthetic per real patch: 0.5, 1, 2
    conda:
        "../envs/segmentation.yaml"
    threads: config["threads"]["downstream"]
    resources:
        gpu=1,
        mem_mb=scaled_by_attempt(16000),
        runtime=scaled_by_attempt(1440),
    params:
        settings=stage_settings(HOVERNET),
    script:
        "../scripts/diffmix_hovernet.py"


rule diffmix_report:
    input:
        unpack(stage_inputs(DIFFMIX_REPORT)),
    output:
        tables=report(
            directory(diffmix_paths.TABLES),
            patterns=["{table}.html"],
            caption="../report/diffmix_tables.rst",
            category="DiffMix",
            subcategory="Tables",
            labels={"table": "{table}"},
        ),
        figures=report(
            directory(diffmix_paths.FIGURES),
            patterns=["{figure}.png"],
            caption="../report/diffmix_figures.rst",
            category="DiffMix",
            subcategory="Figures",
            labels={"figure": "{figure}"},
        ),
    log:
        "logs/diffmix_report.log",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        # job labels and the caption lines of the HTML report
        settings=stage_settings(DIFFMIX_REPORT),
    script:
        "../scripts/diffmix_report.py"
