# Raw data -> per-paper 2D representation -> splits.


rule make_demo_dataset:
    output:
        root=directory("resources/demo/{demo_folder}"),
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
        settings=demo_settings_of,
    script:
        "../scripts/make_demo_dataset.py"


rule prepare_dataset:
    input:
        root=dataset_root,
    output:
        prepared=directory("results/{paper}/{dataset}/prepared"),
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
        settings=prepare_settings_of,
    script:
        "../scripts/prepare_dataset.py"


rule make_splits:
    input:
        prepared="results/{paper}/{dataset}/prepared",
    output:
        splits="results/{paper}/{dataset}/splits.json",
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
        settings=split_settings_of,
    script:
        "../scripts/make_splits.py"
