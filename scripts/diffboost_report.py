"""DiffBoost's tables (CSV + Markdown) and figures from every downstream run's metrics.

Run by Snakemake only (its inputs are the whole set of downstream runs).
"""

import logging

import _checkout  # noqa: F401  (this checkout's medaug first on sys.path)

from medaug.logs import run_job
from medaug.tables import collect, dice_vs_ratio_figure, sample_panels, samples_figure, write_tables


def main(inputs, params, outputs, log):
    def job():
        metrics = collect(inputs.metrics, params.labels)
        metrics.to_csv(outputs.metrics, sep="\t", index=False, float_format="%.6g")
        rows = write_tables(metrics, outputs.tables)
        logging.getLogger("medaug").info("tables written: %s", rows)
        dice_vs_ratio_figure(metrics, outputs.ratio_png, outputs.ratio_svg)
        panels = []
        for dataset, prepared, conditions, synthetic in zip(
            params.sample_datasets, inputs.prepared, inputs.conditions, inputs.synthetic, strict=True
        ):
            panels += sample_panels(dataset, prepared, conditions, synthetic, params.sample_ratio)
        samples_figure(panels, outputs.samples, columns=2 + params.sample_ratio)

    run_job(job, log)


if "snakemake" in globals():
    main(snakemake.input, snakemake.params, snakemake.output, snakemake.log[0])
