"""Step 5: rank the candidates on the shared test split and hold the best against production.

Champion/challenger: the production model is scored on today's test split too (the split hashes
configurations, so it never trained on them). The challenger is promoted when there is no
champion, when it beats the champion's MAE by at least the configured margin, or when a
promotion is forced; the report says which and why.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from co2.evaluation import evaluate
from co2.files import new_directory, read_json, utc_stamp, write_json
from co2.logs import get_logger
from co2.mlflow_utils import (
    OtherModelCodeError,
    current_production,
    download_version,
    load_trusted_model,
    mlflow_client,
)
from co2.pipeline.results import Candidate, CompareResult
from co2.settings import Settings

log = get_logger("co2.compare")


def rank(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best first: lowest MAE per car, then lowest RMSE."""
    if not candidates:
        raise ValueError("no candidates to compare: every training task must have produced at least one")
    return sorted(candidates, key=lambda c: (c["mae_g_km"], c["rmse_g_km"]))


def decide(
    winner: dict[str, Any],
    champion_metrics: dict[str, float] | None,
    champion_error: str | None,
    *,
    force: bool,
    min_improvement: float,
    champion_other_code: str | None = None,
) -> tuple[bool, str]:
    """Whether to promote the winner, and the sentence that explains it."""
    challenger = f"{winner['name']} (MAE {winner['mae_g_km']:.3f} g/km)"
    if force:
        return True, f"promotion forced by the run's parameters; {challenger}"
    if champion_other_code is not None:
        # This platform's service refuses that version too: keeping it would keep nothing served.
        return (
            True,
            f"this platform cannot load the production model ({champion_other_code}); {challenger} replaces it",
        )
    if champion_error is not None:
        return (
            False,
            f"the production model could not be scored ({champion_error}); not replacing it without force_promotion",
        )
    if champion_metrics is None:
        return True, f"no production model yet; {challenger} becomes the first"
    gain = champion_metrics["mae_g_km"] - winner["mae_g_km"]
    versus = f"{challenger} vs production MAE {champion_metrics['mae_g_km']:.3f} g/km on the same test split"
    if gain >= min_improvement:
        return True, f"challenger is better by {gain:.3f} g/km: {versus}"
    return False, f"challenger is not better by at least {min_improvement} g/km: {versus}"


def compare(
    candidates: list[Candidate], lineage_path: Path, settings: Settings, *, force_promotion: bool = False
) -> CompareResult:
    ranking = rank([candidate.to_dict() for candidate in candidates])
    winner = ranking[0]
    lineage = read_json(lineage_path)
    test = pd.read_parquet(lineage["test"]["path"])
    client = mlflow_client(settings)
    champion = current_production(client, settings)
    champion_metrics: dict[str, float] | None = None
    champion_error: str | None = None
    champion_other_code: str | None = None
    if champion is not None:
        try:
            # the registry is a trust boundary: its files are checked before anything is deserialized
            with tempfile.TemporaryDirectory(prefix="co2-champion-") as tmp:
                local = download_version(
                    client, settings.mlflow_tracking_uri, settings.model_name, str(champion.version), tmp
                )
                model = load_trusted_model(local)
            champion_metrics = evaluate(model, test)
        except OtherModelCodeError as exc:  # no service of this platform can load it either
            champion_other_code = str(exc)
            log.warning("champion_other_code", version=champion.version, reason=champion_other_code)
        except Exception as exc:  # any failure to load or score is reported, never fatal
            champion_error = f"{type(exc).__name__}: {exc}"
            log.warning("champion_not_scored", version=champion.version, error=champion_error)
    promote, reason = decide(
        winner,
        champion_metrics,
        champion_error,
        force=force_promotion,
        min_improvement=settings.min_improvement_g_km,
        champion_other_code=champion_other_code,
    )
    report_dir = new_directory(settings.reports_dir / Path(lineage_path).parent.name, f"compare_{utc_stamp()}")
    report_path = report_dir / "compare.json"
    result = CompareResult(
        winner=winner,
        promote=promote,
        reason=reason,
        champion_version=str(champion.version) if champion is not None else None,
        champion_metrics=champion_metrics,
        report_path=str(report_path),
        ranking=ranking,
    )
    write_json(
        {"kind": "compare_report", "compared_at": datetime.now(UTC).isoformat(), **result.to_dict()}, report_path
    )
    for position, candidate in enumerate(ranking, start=1):
        log.info(
            "candidate_ranked",
            position=position,
            candidate=candidate["name"],
            mae_g_km=round(candidate["mae_g_km"], 3),
            rmse_g_km=round(candidate["rmse_g_km"], 3),
            r2=round(candidate["r2"], 4),
        )
    log.info(
        "compare_finished",
        winner=winner["name"],
        promote=promote,
        reason=reason,
        champion_version=result.champion_version,
    )
    return result
