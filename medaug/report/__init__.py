"""Report helpers shared by the papers: ``tables`` (per-run aggregation, paired statistics,
CSV/Markdown/HTML) and ``figures`` (headless matplotlib, saving)."""
