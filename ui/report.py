"""The run report's figures of the version in production, read server-side from MLflow's artifact endpoint.

The report (co2.pipeline.report) lives on the winner's MLflow run under `report/`: `summary.json` names
its figures. Only PNG files named there are fetched, each bounded in size and checked to be a PNG, so the
page shows pictures and nothing else; anything missing (a version trained before reports, MLflow out of
reach) leaves the page with the link to the run instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from co2 import http_client
from co2.run_report import REPORT_DIR, SUMMARY_FILE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURE_NAME = re.compile(r"[a-z][a-z0-9_]{0,80}\.png")
MAX_SUMMARY_BYTES = 1 << 20
MAX_FIGURE_BYTES = 8 << 20
TIMEOUT_SECONDS = 20.0


def shown_figures(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(file, caption) of the figures the page shows, in reading order: the candidates, the winner's errors,
    the data, and the shift since production's training data when there is one."""
    named = {str(name) for name in summary.get("figures", []) if FIGURE_NAME.fullmatch(str(name))}
    winner = str(summary.get("winner", ""))
    wanted = [
        ("candidates.png", "Every candidate's MAE on the test split (and its backtest)"),
        (f"candidate_{winner}.png", f"Where {winner} errs: predicted against actual, and by group"),
        ("data.png", "The data it was trained on"),
        ("drift.png", "What changed since the training data of the version then in production"),
    ]
    return [(name, caption) for name, caption in wanted if name in named]


def _fetch(mlflow_url: str, run_id: str, path: str, limit: int) -> bytes | None:
    try:
        with http_client.shared().stream(
            "GET",
            f"{mlflow_url}/get-artifact",
            params={"path": f"{REPORT_DIR}/{path}", "run_uuid": run_id},
            timeout=TIMEOUT_SECONDS,
        ) as answer:
            if answer.status_code != 200:
                return None
            body = bytearray()
            for chunk in answer.iter_bytes():
                body += chunk
                if len(body) > limit:
                    return None
            return bytes(body)
    except httpx.HTTPError:
        return None


def report_figures(mlflow_url: str, run_id: str) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
    """(caption, PNG) of the run's report figures and its summary; both empty when there is no report to read."""
    base = mlflow_url.rstrip("/")
    raw = _fetch(base, run_id, SUMMARY_FILE, MAX_SUMMARY_BYTES)
    try:
        summary = json.loads(raw) if raw else {}
    except ValueError:
        summary = {}
    if not isinstance(summary, dict):
        return [], {}
    figures = []
    for name, caption in shown_figures(summary):
        data = _fetch(base, run_id, name, MAX_FIGURE_BYTES)
        if data and data.startswith(PNG_SIGNATURE):
            figures.append((caption, data))
    return figures, summary
