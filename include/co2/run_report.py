"""Where a run report lives, declared once for what writes it (co2.pipeline.report) and what reads it
(the registered version's description, the prediction page): light, so the page imports no plotting."""

from __future__ import annotations

REPORT_DIR = "report"  # the artifact folder on the winner's MLflow run
REPORT_HTML = "report.html"
PROFILE_FILE = "data_profile.json"
SUMMARY_FILE = "summary.json"  # the numbers, and the file names of the figures


def report_link(experiment_id: str, run_id: str) -> str:
    """The report in MLflow's UI, as a link relative to the UI (version descriptions are rendered there)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}/artifacts/{REPORT_DIR}/{REPORT_HTML}"
