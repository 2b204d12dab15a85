# DiffBoost: condition maps -> ControlNet per fold -> synthetic slices per ratio ->
# segmenters (MONAI arm, nnU-Net arm) -> tables and figures. Each rule's inputs and settings
# come from its stage in medaug/diffboost/stages.py; its paths from medaug/diffboost/paths.py.
from medaug.diffboost import params as diffboost_params
from medaug.diffboost import paths as diffboost_paths
from medaug.diffboost.stages import (
    CONDITIONS,
    FINETUNE,
    NNUNET_PLAN,
    NNUNET_TRAIN,
    QUALITY,
    REPORT,
    SAMPLE,
    SEGMENT,
)


wildcard_constraints:
    variant=r"[A-Za-z0-9_.]+",
    protocol="|".join(diffboost_params.PROTOCOLS),


rule diffboost_conditions:
    input:
        unpack(stage_inputs(CONDITIONS)),
    output:
        conditions=directory(diffboost_paths.CONDITIONS),
    log:
        "logs/diffboost_conditions/{dataset}.log",
    benchmark:
        "benchmarks/diffboost_conditions/{dataset}.tsv"
    # Before other ready jobs, like the fine-tuning it feeds: a dataset whose condition maps
    # wait behind other datasets' segmenters starts its generator last.
    priority: 10
    conda:
        "../envs/diffusion.yaml"
    resources:
        mem_mb=scaled_by_attempt(4000),
        runtime=scaled_by_attempt(60),
    params:
        settings=stage_settings(CONDITIONS),
    script:
        "../scripts/diffboost_conditions.py"


rule finetune_controlnet:
    input:
        unpack(stage_inputs(FINETUNE)),
    output:
        # protected: a finished model is write-protected, so that a changed parameter or
        # script cannot silently retrain it (delete the folder to retrain on purpose).
        model=protected(directory(diffboost_paths.CONTROLNET)),
    log:
        "logs/finetune_controlnet/{dataset}/fold{fold}.log",
    benchmark:
        "benchmarks/finetune_controlnet/{dataset}/fold{fold}.tsv"
    # Before other ready jobs: fine-tune -> sample -> DiffBoost arms is the longest chain,
    # and a generator started last leaves the other cores idle at the end.
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
        settings=stage_settings(FINETUNE),
    script:
        "../scripts/finetune_controlnet.py"


rule sample_synthetic:
    input:
        unpack(stage_inputs(SAMPLE)),
    output:
        synthetic=directory(diffboost_paths.SYNTHETIC),
    log:
        "logs/sample_synthetic/{dataset}/fold{fold}/ratio{ratio}.log",
    benchmark:
        "benchmarks/sample_synthetic/{dataset}/fold{fold}/ratio{ratio}.tsv"
    # Before other ready jobs: the DiffBoost arms and the quality job wait for it.
    priority: 10
    conda:
        "../envs/diffusion.yaml"
    threads: config["threads"]["diffusion"]
    resources:
        gpu=1,
        mem_mb=scaled_by_attempt(16000),
        runtime=scaled_by_attempt(240),
    params:
        settings=stage_settings(SAMPLE),
    script:
        "../scripts/sample_synthetic.py"


rule generator_quality:
    input:
        unpack(stage_inputs(QUALITY)),
    output:
        quality=diffboost_paths.GENERATOR_QUALITY,
    log:
        "logs/generator_quality/{dataset}/fold{fold}.log",
    benchmark:
        "benchmarks/generator_quality/{dataset}/fold{fold}.tsv"
    conda:
        "../envs/diffusion.yaml"
    threads: config["threads"]["diffusion"]
    resources:
        gpu=1,
        mem_mb=scaled_by_attempt(16000),
        runtime=scaled_by_attempt(60),
    params:
        settings=stage_settings(QUALITY),
    script:
        "../scripts/generator_quality.py"


rule train_segmenter:
    input:
        unpack(stage_inputs(SEGMENT)),
    output:
        metrics=diffboost_paths.SEGMENTER_METRICS,
        record=diffboost_paths.SEGMENTER_RECORD,
    log:
        "logs/train_segmenter/{dataset}/fold{fold}/{variant}/seed{seed}.log",
    benchmark:
        "benchmarks/train_segmenter/{dataset}/fold{fold}/{variant}/seed{seed}.tsv"
    conda:
        "../envs/segmentation.yaml"
    threads: config["threads"]["downstream"]
    resources:
        gpu=1,
        mem_mb=scaled_by_attempt(8000),
        runtime=scaled_by_attempt(240),
    params:
        settings=stage_settings(SEGMENT),
    script:
        "../scripts/train_segmenter.py"


rule nnunet_plan:
    input:
        unpack(stage_inputs(NNUNET_PLAN)),
    output:
        plans=diffboost_paths.NNUNET_PLANS,
    log:
        "logs/nnunet_plan/{dataset}/fold{fold}/{protocol}.log",
    benchmark:
        "benchmarks/nnunet_plan/{dataset}/fold{fold}/{protocol}.tsv"
    conda:
        "../envs/nnunet.yaml"
    threads: config["threads"]["nnunet"]
    resources:
        mem_mb=scaled_by_attempt(8000),
        runtime=scaled_by_attempt(60),
    script:
        "../scripts/nnunet_plan.py"


rule nnunet_train:
    input:
        unpack(stage_inputs(NNUNET_TRAIN)),
    output:
        metrics=diffboost_paths.NNUNET_METRICS,
    log:
        "logs/nnunet_train/{dataset}/fold{fold}/{protocol}/ratio{ratio}.log",
    benchmark:
        "benchmarks/nnunet_train/{dataset}/fold{fold}/{protocol}/ratio{ratio}.tsv"
    conda:
        "../envs/nnunet.yaml"
    threads: config["threads"]["nnunet"]
    resources:
        gpu=1,
        mem_mb=scaled_by_attempt(16000),
        runtime=scaled_by_attempt(1440),
    params:
        settings=stage_settings(NNUNET_TRAIN),
    script:
        "../scripts/nnunet_train.py"


rule diffboost_report:
    input:
        unpack(stage_inputs(REPORT)),
    output:
        metrics=diffboost_paths.METRICS,
        tables=report(
            directory(diffboost_paths.TABLES),
            patterns=["{table}.html"],
            caption="../report/diffboost_tables.rst",
            category="DiffBoost",
            subcategory="Tables",
            labels={"table": "{table}"},
        ),
        ratio_png=report(
            diffboost_paths.RATIO_FIGURE,
            caption="../report/diffboost_dice_vs_ratio.rst",
            category="DiffBoost",
            subcategory="Figures",
        ),
        ratio_svg=diffboost_paths.RATIO_FIGURE_SVG,
        samples=report(
            diffboost_paths.SAMPLES_FIGURE,
            caption="../report/diffboost_samples.rst",
            category="DiffBoost",
            subcategory="Figures",
        ),
    log:
        "logs/diffboost_report.log",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        # run labels and the caption lines of the HTML report
        settings=stage_settings(REPORT),
    script:
        "../scripts/diffboost_report.py"
