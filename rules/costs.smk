# What the run cost: wall time and peak memory per rule, from the benchmark files.


rule summarize_benchmarks:
    input:
        pipeline_targets(),
    output:
        jobs="results/benchmarks/jobs.tsv",
        summary="results/benchmarks/summary.tsv",
    log:
        "logs/summarize_benchmarks.log",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        benchmark_root="benchmarks",
    script:
        "../scripts/summarize_benchmarks.py"
