"""Step 7: the run report, on the winner's MLflow run: what the data were, what changed since production's
training data, how each candidate errs, and why production moved or stayed.

Built from what the steps already hold (the processed splits, the lineage's counts, the validation
report, each candidate's test-split predictions, the comparison): nothing reads the raw snapshot again.
It is logged under the artifact folder `report/`: PNG figures, one self-contained `report.html` (figures
embedded, no link that needs a network), `summary.json` with its numbers, and `data_profile.json`, the
training data's profile the next run measures its shift against.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from co2 import drift
from co2 import report_figures as figures
from co2.experiment import rounded
from co2.files import read_json
from co2.logs import get_logger
from co2.mlflow_utils import mlflow_client
from co2.pipeline.results import CompareResult, ReportResult
from co2.pipeline.train import PREDICTED
from co2.run_report import PROFILE_FILE, REPORT_DIR, REPORT_HTML, SUMMARY_FILE
from co2.settings import Settings

log = get_logger("co2.report")

# Metrics on the winner's run: the PSI of each input against production's training data.
DRIFT_METRIC_PREFIX = "drift_psi."


def candidates_table(comparison: dict[str, Any]) -> pd.DataFrame:
    """Every candidate's test-split metrics as logged (rounded the same way), best first; production's
    row, scored on the same split, last."""
    rows = []
    for candidate in comparison["ranking"]:
        shown = rounded({k: candidate[k] for k in ("mae_g_km", "rmse_g_km", "r2")})
        backtest = candidate.get("backtest_mae_g_km")
        rows.append(
            {
                "candidate": candidate["name"],
                **shown,
                "backtest_mae_g_km": rounded({"backtest_mae_g_km": backtest})["backtest_mae_g_km"]
                if backtest is not None
                else None,
                "train_seconds": candidate.get("train_seconds"),
                "run_id": candidate["run_id"],
            }
        )
    champion = comparison.get("champion_metrics")
    if champion:
        rows.append(
            {
                "candidate": f"production (version {comparison['champion_version']})",
                **rounded({k: champion[k] for k in ("mae_g_km", "rmse_g_km", "r2")}),
                "backtest_mae_g_km": None,
                "train_seconds": None,
                "run_id": "",
            }
        )
    return pd.DataFrame(rows)


def reference_profile(client: Any, settings: Settings, comparison: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """Production's training-data profile and a sentence saying whose it is (or why there is none).

    From the profile its own report stored; for a version older than reports, from its training split
    if that file is still on this disk."""
    version = comparison.get("champion_version")
    if version is None:
        return None, "no production model yet: nothing to compare the data with"
    run_id = client.get_model_version(settings.model_name, str(version)).run_id
    whose = f"production's training data (version {version}, run {run_id})"
    with tempfile.TemporaryDirectory(prefix="co2-reference-") as tmp:
        try:
            path = client.download_artifacts(run_id, f"{REPORT_DIR}/{PROFILE_FILE}", tmp)
            return read_json(Path(path)), whose
        except Exception:  # an older version: no profile stored with it
            pass
        try:
            lineage = read_json(Path(client.download_artifacts(run_id, "lineage.json", tmp)))
            return drift.profile(pd.read_parquet(lineage["train"]["path"])), whose
        except Exception as exc:
            return None, f"production (version {version}) has no data profile and its training split is gone ({exc})"


def _table(frame: pd.DataFrame, **options: Any) -> str:
    frame = frame.astype(object).where(frame.notna(), "–")  # None as well as NaN: nothing to show
    return str(frame.to_html(index=False, border=0, classes="table", escape=True, **options))


def _figure(name: str, data: bytes, caption: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return (
        f'<figure id="{html.escape(name)}"><img alt="{html.escape(caption)}" src="data:image/png;base64,{encoded}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;
padding:0 1rem}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ddd;padding-bottom:.3rem;margin-top:2.2rem}
.table{border-collapse:collapse;margin:.8rem 0;font-size:.9rem}.table th,.table td{padding:.3rem .7rem;text-align:right;
border-bottom:1px solid #eee}.table th{background:#f5f5f5}.table td:first-child,.table th:first-child{text-align:left}
figure{margin:1rem 0}img{max-width:100%}figcaption{color:#555;font-size:.9rem}
.decision{padding:.8rem 1rem;border-left:4px solid #4878a8;background:#f3f6fa}.shifted{color:#c8553d;font-weight:600}
"""


def render_html(sections: list[tuple[str, str]], title: str) -> str:
    body = "".join(f"<section><h2>{html.escape(heading)}</h2>{content}</section>" for heading, content in sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


@dataclass
class ReportFiles:
    """What the report folder holds, before it is logged."""

    figures: dict[str, bytes]
    page: str
    summary: dict[str, Any]
    profile: dict[str, Any]
    shifts: list[drift.FeatureShift]

    def write(self, folder: Path) -> None:
        for name, data in self.figures.items():
            (folder / name).write_bytes(data)
        (folder / REPORT_HTML).write_text(self.page, encoding="utf-8")
        (folder / PROFILE_FILE).write_text(json.dumps(self.profile, indent=1))
        (folder / SUMMARY_FILE).write_text(json.dumps(self.summary, indent=1, default=str))


def compose(
    comparison: dict[str, Any],
    lineage: dict[str, Any],
    train: pd.DataFrame,
    test: pd.DataFrame,
    predicted: dict[str, np.ndarray],
    reference: dict[str, Any] | None,
    reference_note: str,
    validation_report_path: str | None = None,
) -> ReportFiles:
    """The report's figures, page and numbers from what the steps hold (pure: no MLflow, no network).

    `predicted` holds each candidate's test-split predictions by name; `reference` is the profile of
    production's training data (None: no shift section, `reference_note` says why)."""
    found = drift.shifts(reference, train) if reference else []
    mix = drift.mix_change(reference, train) if reference else pd.DataFrame()
    table = candidates_table(comparison)
    drawn: dict[str, bytes] = {
        "candidates.png": figures.candidates_figure(table),
        "data.png": figures.data_figure(
            lineage.get("registrations_by", {}), pd.concat([train, test]), lineage.get("removed_by_rule", {})
        ),
    }
    if found:
        drawn["drift.png"] = figures.drift_figure(found, mix)
    for candidate in comparison["ranking"]:
        name = candidate["name"]
        drawn[f"candidate_{name}.png"] = figures.candidate_figure(name, test, predicted[name])
    winner = comparison["winner"]
    sections = _sections(comparison, lineage, table, found, mix, reference_note, drawn, validation_report_path)
    years = ", ".join(map(str, lineage.get("years", [])))
    summary = {
        "kind": "run_report",
        "winner": winner["name"],
        "promote": comparison["promote"],
        "reason": comparison["reason"],
        "candidates": table.drop(columns=["run_id"]).to_dict(orient="records"),
        "shift_reference": reference_note,
        "shifts": [s.to_dict() for s in found],
        "thresholds": {"psi_moderate": drift.PSI_MODERATE, "psi_shifted": drift.PSI_SHIFTED},
        "figures": sorted(drawn),
    }
    page = render_html(sections, f"Retraining report: {winner['name']} on {years}")
    return ReportFiles(drawn, page, summary, drift.profile(train), found)


def build_report(
    compared: CompareResult,
    lineage_path: Path,
    settings: Settings,
    *,
    validation_report_path: str | None = None,
) -> ReportResult:
    """Draw the report and log it on the winner's run; return where it is and what shifted."""
    started = time.perf_counter()
    comparison = compared.to_dict()  # what the report's pure parts read
    client = mlflow_client(settings)
    lineage = read_json(lineage_path)
    train = pd.read_parquet(lineage["train"]["path"])
    test = pd.read_parquet(lineage["test"]["path"])
    predicted = {
        c["name"]: pd.read_parquet(c["predictions_path"])[PREDICTED].to_numpy(dtype=np.float64)
        for c in comparison["ranking"]
    }
    reference, reference_note = reference_profile(client, settings, comparison)
    files = compose(comparison, lineage, train, test, predicted, reference, reference_note, validation_report_path)
    run = client.get_run(comparison["winner"]["run_id"])
    with tempfile.TemporaryDirectory(prefix="co2-report-") as tmp:
        files.write(Path(tmp))
        client.log_artifacts(run.info.run_id, tmp, REPORT_DIR)
    for shift in files.shifts:
        client.log_metric(run.info.run_id, f"{DRIFT_METRIC_PREFIX}{shift.feature}", shift.psi)
    shifted = [s.feature for s in files.shifts if s.status == "shifted"]
    seconds = time.perf_counter() - started
    log.info(
        "report_logged",
        run_id=run.info.run_id,
        figures=len(files.figures),
        shifted=",".join(shifted) or "none",
        reference=reference_note,
        seconds=round(seconds, 2),
    )
    return ReportResult(
        run.info.run_id,
        f"{run.info.artifact_uri}/{REPORT_DIR}/{REPORT_HTML}",
        sorted(files.figures),
        shifted,
        reference_note,
        round(seconds, 2),
    )


def _sections(
    comparison: dict[str, Any],
    lineage: dict[str, Any],
    table: pd.DataFrame,
    found: list[drift.FeatureShift],
    mix: pd.DataFrame,
    reference_note: str,
    drawn: dict[str, bytes],
    validation_report_path: str | None,
) -> list[tuple[str, str]]:
    winner = comparison["winner"]
    verdict = "promoted to production" if comparison["promote"] else "registered, not promoted"
    raw = lineage.get("raw_metadata", {})
    tables = ", ".join(f"{year}: {name}" for year, name in sorted(raw.get("tables", {}).items()))
    generated = (raw.get("discovery") or {}).get("generated") or []
    decision = (
        f'<p class="decision"><b>{html.escape(winner["name"])}</b> won and was {verdict}: '
        f"{html.escape(comparison['reason'])}</p>"
        f"<p>EEA tables: {html.escape(tables or 'not recorded')}; source {html.escape(str(raw.get('source_url', '')))}."
        + (f" Generated (not EEA data): {html.escape(', '.join(generated))}." if generated else "")
        + "</p>"
    )
    candidates = (
        _table(table.drop(columns=["run_id"]))
        + "<p>Metrics on the configuration-hashed test split, each car weighted by its registrations (g/km; "
        "backtest: fit without the newest year, scored on it).</p>"
        + _figure("candidates", drawn["candidates.png"], "MAE per candidate")
    )
    removed_by_rule: dict[str, int] = lineage.get("removed_by_rule", {})
    removed = pd.DataFrame({"rule": list(removed_by_rule), "rows removed": list(removed_by_rule.values())}).sort_values(
        "rows removed", ascending=False, kind="stable"
    )
    untrusted = lineage.get("untrusted_fuel_consumption_states", {})
    data = (
        f"<p>{lineage.get('rows_in', 0):,} configurations ({lineage.get('registrations_in', 0):,} registrations) "
        f"after download; {lineage.get('registrations_removed', 0):,} registrations removed as impossible; "
        f"train {lineage['train']['rows']:,} / test {lineage['test']['rows']:,} configurations.</p>"
        + _figure("data", drawn["data.png"], "The data of this run")
        + "<h3>What preprocessing removed, per rule</h3>"
        + _table(removed)
        + (
            "<p>Fuel consumption not trusted (reported on another basis than WLTP) in: "
            + html.escape(", ".join(f"{s} (CO₂/fuel ratio {r})" for s, r in untrusted.items()))
            + "; it is treated as not given for these member states.</p>"
            if untrusted
            else ""
        )
        + _validation_table(validation_report_path)
    )
    if found:
        shifted = [s.feature for s in found if s.status == "shifted"]
        shifts = pd.DataFrame([s.to_dict() for s in found])
        changes = (
            f"<p>Against {html.escape(reference_note)}. Population stability index per input over registration-"
            f"weighted deciles of production's data: above {drift.PSI_SHIFTED} shifted, above {drift.PSI_MODERATE} "
            "moderate. Shifted inputs first.</p>"
            + (f'<p class="shifted">Shifted: {html.escape(", ".join(shifted) or "none")}</p>')
            + _table(shifts)
            + "<h3>Fuel mix, % of registrations</h3>"
            + _table(mix.round(2))
            + _figure("drift", drawn["drift.png"], "Shift against production's training data")
        )
    else:
        changes = f"<p>{html.escape(reference_note)}.</p>"
    per_candidate = "".join(
        _figure(name.removesuffix(".png"), data, name.removesuffix(".png").removeprefix("candidate_"))
        for name, data in drawn.items()
        if name.startswith("candidate_")
    )
    return [
        ("Decision", decision),
        ("Candidates", candidates),
        ("The data", data),
        ("What changed since production's training data", changes),
        ("Each candidate's errors", per_candidate),
    ]


def _validation_table(path: str | None) -> str:
    if not path or not Path(path).exists():
        return ""
    checks = pd.DataFrame(read_json(Path(path)).get("checks", []))
    if checks.empty:
        return ""
    return "<h3>Validation checks</h3>" + _table(checks[["name", "passed", "observed", "limit", "detail"]])
