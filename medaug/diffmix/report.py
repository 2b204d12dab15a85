"""DiffMix's tables. Today: ``label_maps``, the nuclei per class of the real training tiles
and of each kind of virtual map, with each class's share: the balancing maps should raise the
rare class's share, the enlarging maps the number of nuclei."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from medaug.diffmix import stages
from medaug.io import atomic_output, read_json
from medaug.report.tables import html_page
from medaug.stage import Job, Stage

log = logging.getLogger(__name__)

TITLE = "Nuclei per class: real training tiles vs virtual label maps"


def label_map_table(records: list[dict]) -> pd.DataFrame:
    """One row per (dataset, map kind, class): nuclei and share, real and virtual."""
    rows = []
    for record in records:
        real_total, virtual_total = sum(record["real"].values()), sum(record["virtual"].values())
        for label, real in record["real"].items():
            virtual = record["virtual"][label]
            rows.append(
                {
                    "dataset": record["dataset"],
                    "map_kind": record["map_kind"],
                    "class": f"{label} {record['labels'][label]}"
                    + (" (rare)" if int(label) == record["rare_class"] else ""),
                    "tiles": len(record["tiles"]),
                    "real nuclei": real,
                    "virtual nuclei": virtual,
                    "real share %": round(100 * real / real_total, 1) if real_total else float("nan"),
                    "virtual share %": round(100 * virtual / virtual_total, 1) if virtual_total else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def _report(job: Job) -> dict:
    records = [read_json(Path(folder) / "counts.json") for folder in job.inputs["maps"]]
    table = label_map_table(records)
    with atomic_output(job.outputs["tables"], directory=True) as tmp:
        table.to_csv(tmp / "label_maps.csv", index=False)
        header = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns) + "\n"
        body = "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in table.itertuples(index=False))
        (tmp / "label_maps.md").write_text(f"### {TITLE}\n\n{header}{body}")
        (tmp / "label_maps.html").write_text(html_page(TITLE, table.to_html(index=False, border=0)))
    log.info("label_maps: %d rows", len(table))
    return {"label_maps": len(table)}


REPORT = Stage(stages.REPORT, _report)
report_entry = REPORT.entry
