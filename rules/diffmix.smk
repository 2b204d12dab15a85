# DiffMix: per dataset, the virtual label maps of each kind (GradMix balancing, enlarging)
# from the training tiles -> tables. Each rule's inputs and settings come from its stage in
# medaug/diffmix/stages.py; its paths from medaug/diffmix/paths.py.
from medaug.diffmix import paths as diffmix_paths
from medaug.diffmix.stages import LABEL_MAPS
from medaug.diffmix.stages import REPORT as DIFFMIX_REPORT


wildcard_constraints:
    map_kind="balancing|enlarging",


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
