# Raw data -> a manifest of its files -> per-paper 2D representation -> splits.
from medaug.demo import DEMO, DEMO_DATASETS
from medaug.manifests import MANIFEST, refresh_manifests
from medaug.papers import PREPARE, SPLIT, used_datasets

# Every run first brings the dataset manifests up to date (one stat per file; hashes only
# of changed files), so a file replaced inside a dataset reruns what depends on it.
if workflow.is_main_process:
    refresh_manifests(config, used_datasets(config))


wildcard_constraints:
    demo_folder="|".join(DEMO_DATASETS),


rule make_demo_dataset:
    output:
        root=directory(paths.DEMO_DATASET),
    log:
        "logs/make_demo_dataset/{demo_folder}.log",
    benchmark:
        "benchmarks/make_demo_dataset/{demo_folder}.tsv"
    # The data rules go before every other ready job (here and below): they take seconds,
    # and every generator waits for them; without it a dataset's chain starts last.
    priority: 20
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        settings=stage_settings(DEMO.spec),
    script:
        "../scripts/make_demo_dataset.py"


rule list_dataset_files:
    input:
        unpack(stage_inputs(MANIFEST.spec)),
    output:
        manifest=paths.MANIFEST,
    log:
        "logs/list_dataset_files/{dataset}.log",
    benchmark:
        "benchmarks/list_dataset_files/{dataset}.tsv"
    priority: 20
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=500,
        runtime=30,
    script:
        "../scripts/list_dataset_files.py"


rule prepare_dataset:
    input:
        unpack(stage_inputs(PREPARE.spec)),
    output:
        prepared=directory(paths.PREPARED),
    log:
        "logs/prepare_dataset/{paper}/{dataset}.log",
    benchmark:
        "benchmarks/prepare_dataset/{paper}/{dataset}.tsv"
    priority: 20
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
    priority: 20
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        settings=stage_settings(SPLIT.spec),
    script:
        "../scripts/make_splits.py"
