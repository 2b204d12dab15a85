# Raw data -> per-paper 2D representation -> splits.
from medaug.demo import DEMO, DEMO_DATASETS
from medaug.papers import PREPARE, SPLIT


wildcard_constraints:
    demo_folder="|".join(DEMO_DATASETS),


rule make_demo_dataset:
    output:
        root=directory(paths.DEMO_DATASET),
    log:
        "logs/make_demo_dataset/{demo_folder}.log",
    benchmark:
        "benchmarks/make_demo_dataset/{demo_folder}.tsv"
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        settings=stage_settings(DEMO.spec),
    script:
        "../scripts/make_demo_dataset.py"


rule prepare_dataset:
    input:
        unpack(stage_inputs(PREPARE.spec)),
    output:
        prepared=directory(paths.PREPARED),
    log:
        "logs/prepare_dataset/{paper}/{dataset}.log",
    benchmark:
        "benchmarks/prepare_dataset/{paper}/{dataset}.tsv"
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=scaled_by_attempt(4000),
        runtime=scaled_by_attempt(60),
    params:
        settings=stage_settings(PREPARE.spec),
    script:
        "../scripts/prepare_dataset.py"


rule make_splits:
    input:
        unpack(stage_inputs(SPLIT.spec)),
    output:
        splits=paths.SPLITS,
    log:
        "logs/make_splits/{paper}/{dataset}.log",
    benchmark:
        "benchmarks/make_splits/{paper}/{dataset}.tsv"
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        settings=stage_settings(SPLIT.spec),
    script:
        "../scripts/make_splits.py"
