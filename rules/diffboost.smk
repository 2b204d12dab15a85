# DiffBoost: condition maps -> ControlNet per fold -> synthetic slices per ratio ->
# segmenters (paper arm, nnU-Net arm) -> tables and figures.


rule diffboost_conditions:
    input:
        prepared="results/diffboost/{dataset}/prepared",
    output:
        conditions=directory("results/diffboost/{dataset}/conditions"),
    log:
        "logs/diffboost_conditions/{dataset}.log",
    benchmark:
        "benchmarks/diffboost_conditions/{dataset}.tsv"
    conda:
        "../envs/diffusion.yaml"
    resources:
        mem_mb=scaled_by_attempt(4000),
        runtime=scaled_by_attempt(60),
    params:
        settings=condition_settings(config),
    script:
        "../scripts/make_conditions.py"


rule finetune_controlnet:
    input:
        prepared="results/diffboost/{dataset}/prepared",
        conditions="results/diffboost/{dataset}/conditions",
        splits="results/diffboost/{dataset}/splits.json",
    output:
        # protected: a finished model is write-protected, so that a changed parameter or
        # script cannot silently retrain it (delete the folder to retrain on purpose).
        model=protected(directory("results/diffboost/{dataset}/fold{fold}/controlnet")),
    log:
        "logs/finetune_controlnet/{dataset}/fold{fold}.log",
    benchmark:
        "benchmarks/finetune_controlnet/{dataset}/fold{fold}.tsv"
    conda:
        "../envs/diffusion.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=scaled_by_attempt(16000),
        runtime=scaled_by_attempt(720),
    params:
        # Resumable checkpoints live beside, not inside, the declared output, so that
        # Snakemake's clean-up of a failed job cannot delete them.
        state_dir="results/diffboost/{dataset}/fold{fold}/controlnet_state",
        settings=controlnet_settings_of,
    script:
        "../scripts/finetune_controlnet.py"


rule sample_synthetic:
    input:
        unpack(sampling_inputs),
    output:
        synthetic=directory(
            "results/diffboost/{dataset}/fold{fold}/synthetic/ratio{ratio}"
        ),
    log:
        "logs/sample_synthetic/{dataset}/fold{fold}/ratio{ratio}.log",
    benchmark:
        "benchmarks/sample_synthetic/{dataset}/fold{fold}/ratio{ratio}.tsv"
    conda:
        "../envs/diffusion.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=scaled_by_attempt(16000),
        runtime=scaled_by_attempt(240),
    params:
        settings=sampling_settings(config),
    script:
        "../scripts/sample_synthetic.py"


rule train_segmenter:
    input:
        unpack(segmenter_inputs),
    output:
        metrics="results/diffboost/{dataset}/fold{fold}/segmentation/{variant}/seed{seed}/metrics.tsv",
        record="results/diffboost/{dataset}/fold{fold}/segmentation/{variant}/seed{seed}/training.json",
    log:
        "logs/train_segmenter/{dataset}/fold{fold}/{variant}/seed{seed}.log",
    benchmark:
        "benchmarks/train_segmenter/{dataset}/fold{fold}/{variant}/seed{seed}.tsv"
    conda:
        "../envs/segmentation.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=scaled_by_attempt(8000),
        runtime=scaled_by_attempt(240),
    params:
        settings=segmenter_settings_of,
    script:
        "../scripts/train_segmenter.py"


rule diffboost_report:
    input:
        unpack(diffboost_report_inputs),
    output:
        metrics="results/diffboost/metrics.tsv",
        tables=report(
            directory("results/diffboost/tables"),
            patterns=["{table}.html"],
            caption="../report/diffboost_tables.rst",
            category="DiffBoost",
            subcategory="Tables",
            labels={"table": "{table}"},
        ),
        ratio_png=report(
            "results/diffboost/figures/dice_vs_ratio.png",
            caption="../report/diffboost_dice_vs_ratio.rst",
            category="DiffBoost",
            subcategory="Figures",
        ),
        ratio_svg="results/diffboost/figures/dice_vs_ratio.svg",
        samples=report(
            "results/diffboost/figures/samples.png",
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
        labels=diffboost_metric_labels(),
        sample_datasets=config["diffboost"]["datasets"],
        sample_ratio=sample_ratio(),
        # caption lines of the HTML report
        scale=diffboost_scale(config),
        data_sources=data_sources(config, config["diffboost"]["datasets"]),
    script:
        "../scripts/diffboost_report.py"


rule nnunet_plan:
    input:
        prepared="results/diffboost/{dataset}/prepared",
        splits="results/diffboost/{dataset}/splits.json",
    output:
        plans="results/diffboost/{dataset}/fold{fold}/nnunet/{protocol}/real_plans.json",
    log:
        "logs/nnunet_plan/{dataset}/fold{fold}/{protocol}.log",
    benchmark:
        "benchmarks/nnunet_plan/{dataset}/fold{fold}/{protocol}.tsv"
    conda:
        "../envs/nnunet.yaml"
    threads: 1
    resources:
        mem_mb=scaled_by_attempt(8000),
        runtime=scaled_by_attempt(60),
    params:
        workdir=subpath(output.plans, parent=True),
    script:
        "../scripts/nnunet_plan.py"


rule nnunet_train:
    input:
        unpack(nnunet_train_inputs),
    output:
        metrics="results/diffboost/{dataset}/fold{fold}/nnunet/{protocol}/ratio{ratio}/metrics.tsv",
    log:
        "logs/nnunet_train/{dataset}/fold{fold}/{protocol}/ratio{ratio}.log",
    benchmark:
        "benchmarks/nnunet_train/{dataset}/fold{fold}/{protocol}/ratio{ratio}.tsv"
    conda:
        "../envs/nnunet.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=scaled_by_attempt(16000),
        runtime=scaled_by_attempt(1440),
    params:
        workdir="results/diffboost/{dataset}/fold{fold}/nnunet/{protocol}",
        settings=nnunet_settings(config),
    script:
        "../scripts/nnunet_train.py"
