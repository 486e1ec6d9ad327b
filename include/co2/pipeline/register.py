"""Step 6: register the winner, and point the production alias at it if the comparison said so.

Every winner becomes a version of the registered model, tagged with what a human needs to trust
it (metrics on the shared test split, data lineage, validation status, the promotion decision).
Only a promoted version moves the alias `production` (and, for clients that still read stages,
the legacy stage `Production`, archiving the previous one). A run that does not promote leaves
production exactly as it was. The decision is logged as the sentence a person reads in the task
log ("promoted version 3: better by 0.210 g/km than version 2"); MLflow's own progress messages go
to the log as the information they are, not to stderr (which Airflow shows as errors).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from co2.experiment import rounded
from co2.files import read_json
from co2.logs import get_logger, printed_as_info, route_mlflow_logging
from co2.mlflow_utils import current_production, mlflow_client
from co2.pipeline.results import CompareResult, RegisterResult
from co2.run_report import report_link
from co2.settings import Settings
from co2.tags import (
    CANDIDATE_TAG,
    DECISION_TAG,
    FAMILY_TAG,
    FINGERPRINT_TAG,
    GENERATED_TABLES_TAG,
    MODEL_CODE_TAGS,
    PREFIX,
    PROMOTED_TAG,
    RAW_SHA256_TAG,
    RUN_ID_TAG,
    SOURCE_URL_TAG,
    TABLES_FROM_TAG,
    TABLES_TAG,
    TEST_SHA256_TAG,
    TRAIN_SHA256_TAG,
    VALIDATION_TAG,
    WITH_MAKE_TAG,
    YEARS_TAG,
)

log = get_logger("co2.register")


def set_legacy_production_stage(client: Any, name: str, version: str) -> None:
    """Stage `Production` for clients that still read stages, the previous holders `Archived`.

    Archiving is done version by version: MLflow's `archive_existing_versions` fails on a
    PostgreSQL backend (it compares the integer version column with a string).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated, aliases are the way
        client.transition_model_version_stage(name, version, "Production")
        for other in client.search_model_versions(f"name = '{name}'"):
            if str(other.version) != version and other.current_stage == "Production":
                client.transition_model_version_stage(name, other.version, "Archived")


def register(
    comparison: CompareResult, lineage_path: Path, settings: Settings, *, extra_tags: dict[str, str] | None = None
) -> RegisterResult:
    import mlflow

    route_mlflow_logging()
    client = mlflow_client(settings)
    winner = comparison.winner
    lineage = read_json(lineage_path)
    previous = current_production(client, settings)
    metrics = {k: float(winner[k]) for k in ("mae_g_km", "rmse_g_km", "r2")}
    run = client.get_run(winner["run_id"]) if winner.get("run_id") else None  # its metrics and experiment
    tags = {
        CANDIDATE_TAG: winner["name"],
        FAMILY_TAG: winner["family"],
        WITH_MAKE_TAG: str(winner["with_make"]).lower(),
        **{f"{PREFIX}{name}": str(value) for name, value in rounded(metrics).items()},
        RAW_SHA256_TAG: lineage["raw_sha256"],
        TRAIN_SHA256_TAG: lineage["train"]["sha256"],
        TEST_SHA256_TAG: lineage["test"]["sha256"],
        YEARS_TAG: ",".join(map(str, lineage.get("raw_metadata", {}).get("years", []))),
        SOURCE_URL_TAG: str(lineage.get("raw_metadata", {}).get("source_url", "")),
        **release_tags(lineage.get("raw_metadata", {})),
        **(aging_tags(run.data.metrics) if run is not None else {}),
        VALIDATION_TAG: "passed",
        PROMOTED_TAG: str(comparison.promote).lower(),
        DECISION_TAG: comparison.reason[:5000],
        RUN_ID_TAG: winner["run_id"],
        # the code the winner was built with, as its training run recorded it
        **({k: v for k, v in run.data.tags.items() if k in MODEL_CODE_TAGS} if run is not None else {}),
        **(extra_tags or {}),
    }
    with printed_as_info("mlflow"):  # "Successfully registered model ...", "Created version ..."
        version = mlflow.register_model(winner["model_uri"], settings.model_name, tags=tags)
    client.update_model_version(
        settings.model_name,
        version.version,
        description=f"{winner['name']}: MAE {metrics['mae_g_km']:.3f} g/km, RMSE {metrics['rmse_g_km']:.3f} g/km, "
        f"R² {metrics['r2']:.4f} on the configuration-hashed test split. {comparison.reason}"
        + (_report_line(run.info.experiment_id, run.info.run_id) if run is not None else ""),
    )
    promoted = comparison.promote
    if promoted:
        client.set_registered_model_alias(settings.model_name, settings.model_alias, version.version)
        set_legacy_production_stage(client, settings.model_name, str(version.version))
    production = version.version if promoted else (previous.version if previous is not None else None)
    decision = decision_sentence(
        str(version.version),
        promoted,
        metrics["mae_g_km"],
        comparison.champion_version,
        (comparison.champion_metrics or {}).get("mae_g_km"),
        settings.min_improvement_g_km,
    )
    result = RegisterResult(
        model_name=settings.model_name,
        version=str(version.version),
        promoted=promoted,
        reason=comparison.reason,
        alias=settings.model_alias,
        production_version=str(production) if production is not None else None,
        previous_production_version=str(previous.version) if previous is not None else None,
        metrics=metrics,
        decision=decision,
    )
    log.info(
        decision,
        model=result.model_name,
        version=result.version,
        promoted="yes" if promoted else "no",
        production_version=result.production_version or "none",
        candidate=winner["name"],
        **rounded(metrics),
    )
    return result


def _report_line(experiment_id: str, run_id: str) -> str:
    """The link to the run report (the `report` task logs it on the winner's run), for the description."""
    link = report_link(experiment_id, run_id)
    return f"\n\n[Run report]({link}): the data, their shift since production's training data, each candidate's errors."


def release_tags(raw_metadata: dict[str, Any]) -> dict[str, str]:
    """What the version was trained on: the EEA tables, where their names came from, and the fingerprint
    that tells the next run whether anything is new (co2.pipeline.discover)."""
    discovery = raw_metadata.get("discovery") or {}
    tags = {TABLES_TAG: json.dumps(raw_metadata.get("tables", {}), sort_keys=True)}
    if discovery:
        tags[FINGERPRINT_TAG] = str(discovery.get("fingerprint", ""))
        tags[TABLES_FROM_TAG] = str(discovery.get("tables_from", ""))
        if discovery.get("generated"):
            tags[GENERATED_TABLES_TAG] = ",".join(discovery["generated"])
    return tags


def aging_tags(run_metrics: dict[str, float]) -> dict[str, str]:
    """The winner's MAE per registration year and its next-year backtest, from its run."""
    return {
        f"{PREFIX}{name}": str(int(value)) if name.endswith("_year") else str(rounded({name: value})[name])
        for name, value in sorted(run_metrics.items())
        if name.startswith(("mae_g_km.year.", "backtest_"))
    }


def decision_sentence(
    version: str,
    promoted: bool,
    mae_g_km: float,
    champion_version: str | None,
    champion_mae_g_km: float | None,
    min_improvement_g_km: float,
) -> str:
    """What register did, as a person reads it: which version serves and why, with the MAEs compared."""
    if champion_version is None:
        return f"promoted version {version}: the first production model (MAE {mae_g_km:.3f} g/km)"
    if champion_mae_g_km is None:  # production could not be scored on the test split
        if promoted:
            return f"promoted version {version} (forced): version {champion_version} could not be scored"
        return (
            f"kept version {champion_version} in production: it could not be scored, "
            f"and version {version} is not promoted without force_promotion"
        )
    gain = champion_mae_g_km - mae_g_km
    maes = f"MAE {mae_g_km:.3f} vs {champion_mae_g_km:.3f} g/km"
    if promoted and gain >= min_improvement_g_km:
        return f"promoted version {version}: better by {gain:.3f} g/km than version {champion_version} ({maes})"
    if promoted:
        return f"promoted version {version} (forced) over version {champion_version} ({maes})"
    if gain > 0:
        return (
            f"kept version {champion_version} in production: version {version} is better by only {gain:.3f} g/km, "
            f"less than the {min_improvement_g_km} g/km required ({maes})"
        )
    return f"kept version {champion_version} in production: version {version} is not better ({maes})"
