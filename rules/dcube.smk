# D-Cube: per scenario, the contrastive U-ViT (step 1) -> block selection and synthetic
# images -> classifiers (D-Cube head, plain CNN) per synthetic count and seed -> tables and
# figures. Each rule's inputs and settings come from its stage in medaug/dcube/stages.py; its
# paths from medaug/dcube/paths.py.
from medaug.dcube import params as dcube_params
from medaug.dcube import paths as dcube_paths
from medaug.dcube.stages import BLOCKS, CLASSIFY, GENERATOR, QUALITY, SYNTHESIS
from medaug.dcube.stages import REPORT as DCUBE_REPORT


wildcard_constraints:
    scenario=dcube_params.SCENARIO_PATTERN,
    model=dcube_params.MODEL_PATTERN,
    synthetic_count=r"\d+",


rule dcube_train_generator:
    input:
        unpack(stage_inputs(GENERATOR)),
    output:
        # protected: a finished model is write-protected, so that a changed parameter or
        # script cannot silently retrain it (delete the folder to retrain on purpose).
        model=protected(directory(dcube_paths.GENERATOR)),
    log:
        "logs/dcube_train_generator/{dataset}/{scenario}.log",
    benchmark:
        "benchmarks/dcube_train_generator/{dataset}/{scenario}.tsv"
    # Before other ready jobs: step 1 heads the longest chain.
    priority: 10
    conda:
        "../envs/diffusion.yaml"
    threads: config["threads"]["diffusion"]
    resources:
        gpu=1,
        mem_mb=scaled_by_attempt(16000),
        runtime=scaled_by_attempt(720),
    params:
        # includes the resumable state folder, which lies beside the declared output
        settings=stage_settings(GENERATOR),
    script:
        "../scripts/dcube_train_generator.py"


rule dcube_select_blocks:
    input:
        unpack(stage_inputs(BLOCKS)),
    output:
        blocks=dcube_paths.BLOCKS,
    log:
        "logs/dcube_select_blocks/{dataset}/{scenario}.log",
    benchmark:
        "benchmarks/dcube_select_blocks/{dataset}/{scenario}.tsv"
    conda:
        "../envs/diffusion.yaml"
    threads: 1
    resources:
        mem_mb=scaled_by_attempt(8000),
        runtime=scaled_by_attempt(60),
    params:
        settings=stage_settings(BLOCKS),
    script:
        "../scripts/dcube_select_blocks.py"


rule dcube_sample:
    input:
        unpack(stage_inputs(SYNTHESIS)),
    output:
        synthetic=directory(dcube_paths.SYNTHETIC),
    log:
        "logs/dcube_sample/{dataset}/{scenario}/count{synthetic_count}.log",
    benchmark:
        "benchmarks/dcube_sample/{dataset}/{scenario}/count{synthetic_count}.tsv"
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
        "../scripts/dcube_sample.py"


rule dcube_classify:
    input:
        unpack(stage_inputs(CLASSIFY)),
    output:
        predictions=dcube_paths.PREDICTIONS,
        record=dcube_paths.CLASSIFIER_RECORD,
        weights=dcube_paths.CLASSIFIER_WEIGHTS,
    log:
        "logs/dcube_classify/{dataset}/{scenario}/{model}/syn{synthetic_count}/seed{seed}.log",
    benchmark:
        "benchmarks/dcube_classify/{dataset}/{scenario}/{model}/syn{synthetic_count}/seed{seed}.tsv"
    conda:
        "../envs/diffusion.yaml"
    threads: config["threads"]["downstream"]
    resources:
        gpu=1,
        mem_mb=scaled_by_attempt(16000),
        runtime=scaled_by_attempt(240),
    params:
        settings=stage_settings(CLASSIFY),
    script:
        "../scripts/dcube_classify.py"


rule dcube_synthetic_quality:
    input:
        unpack(stage_inputs(QUALITY)),
    output:
        quality=dcube_paths.SYNTHETIC_QUALITY,
    log:
        "logs/dcube_synthetic_quality/{dataset}/{scenario}/count{synthetic_count}.log",
    benchmark:
        "benchmarks/dcube_synthetic_quality/{dataset}/{scenario}/count{synthetic_count}.tsv"
    conda:
        "../envs/diffusion.yaml"
    threads: config["threads"]["downstream"]
    resources:
        mem_mb=scaled_by_attempt(8000),
        runtime=scaled_by_attempt(60),
    params:
        settings=stage_settings(QUALITY),
    script:
        "../scripts/dcube_synthetic_quality.py"


rule dcube_report:
    input:
        unpack(stage_inputs(DCUBE_REPORT)),
    output:
        metrics=dcube_paths.METRICS,
        tables=report(
            directory(dcube_paths.TABLES),
            patterns=["{table}.html"],
            caption="../report/dcube_tables.rst",
            category="D-Cube",
            subcategory="Tables",
            labels={"table": "{table}"},
        ),
        figures=report(
            directory(dcube_paths.FIGURES),
            patterns=["{figure}.png"],
            caption="../report/dcube_figures.rst",
            category="D-Cube",
            subcategory="Figures",
            labels={"figure": "{figure}"},
        ),
    log:
        "logs/dcube_report.log",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        # run labels and the caption lines of the HTML report
        settings=stage_settings(DCUBE_REPORT),
    script:
        "../scripts/dcube_report.py"
