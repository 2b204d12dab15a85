# medaug: diffusion-model data augmentation for medical imaging, reproduced end to end.
# DiffBoost (segmentation), DiffMix (nuclei) and D-Cube (classification); see README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/diffboost.smk"
include: "rules/diffmix.smk"
include: "rules/dcube.smk"
include: "rules/costs.smk"


rule all:
    default_target: True
    input:
        all_targets(config),
        rules.summarize_benchmarks.output,


rule diffboost:
    input:
        targets(config, "diffboost"),


rule diffmix:
    input:
        targets(config, "diffmix"),


rule dcube:
    input:
        targets(config, "dcube"),
