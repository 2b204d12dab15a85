# What the run cost: wall time and peak memory per rule, from the benchmark files.
from medaug.benchmarks import SUMMARY


rule summarize_benchmarks:
    input:
        all_targets(config),
    output:
        jobs=paths.BENCHMARK_JOBS,
        summary=paths.BENCHMARK_SUMMARY,
    log:
        "logs/summarize_benchmarks.log",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        settings=stage_settings(SUMMARY.spec),
    script:
        "../scripts/summarize_benchmarks.py"
