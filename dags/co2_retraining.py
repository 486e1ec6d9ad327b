"""
### CO₂ emissions model: quarterly retraining

Keeps the model `co2-emissions` in the MLflow registry up to date with the EEA's monitoring data
of new cars (WLTP CO₂ from mass, engine, power, fuel and eco-innovations).

| step | what it does | writes |
|---|---|---|
| `download` | asks EEA discodata for one row per distinct vehicle configuration with its registration count (server-side `GROUP BY`), pages and retries | a new, read-only raw snapshot + metadata (sha256) under `CO2_DATA_DIR/raw/` |
| `validate` | declared schema: columns, types, physical ranges, null rates, fuel types, row count | a report under `CO2_DATA_DIR/reports/`; fails the run naming each failed check |
| `preprocess` | vocabulary (fuel types, makes), zero-emission rule, impossible values, untrusted fuel consumption, configuration-hashed train/test split | train/test Parquet + `lineage.json` |
| `train_*` | RandomForest, LinearRegression, KNN, each with and without the make, in parallel | one MLflow run per candidate |
| `compare` | ranks the candidates on the shared test split, scores production on it too | a report with the reason |
| `register` | registers the winner; moves the alias `production` only if it beats production (or `force_promotion`) | a model version with metrics and lineage tags |

**Params** (the trigger form opens with each default, ready to submit): `years` (registration
years; empty: `CO2_YEARS`), `source` (empty: the Airflow connection `co2_discodata`, else
`CO2_DISCODATA_URL`; `live`: the EEA service; or an http(s) URL), `force_promotion`.

A failed run changes nothing that works: raw snapshots are never overwritten and production
moves only in `register`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import CronTriggerTimetable, Param, dag, task

RETRIES = {"retries": 2, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": True}


@dag(
    dag_id="co2_retraining",
    # Quarterly, as the cron job it replaces: the first run is the next quarter, not one
    # for a quarter already past when the DAG is first unpaused (trigger it for that).
    schedule=CronTriggerTimetable("0 0 1 */3 *", timezone="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["co2", "mlops", "retraining"],
    default_args={"owner": "co2", **RETRIES},
    params={
        "years": Param(
            [], type="array", items={"type": "integer"}, description="Registration years; empty: CO2_YEARS."
        ),
        # Optional (null allowed, null by default): the trigger form treats a param whose type has no
        # "null" as required, and refuses to submit it empty.
        "source": Param(
            None,
            type=["null", "string"],
            pattern=r"^(live|https?://\S+)?$",
            description="Empty: connection co2_discodata or CO2_DISCODATA_URL; 'live'; or an http(s) URL.",
        ),
        "force_promotion": Param(
            False, type="boolean", description="Promote the best candidate even if it does not beat production."
        ),
    },
)
def co2_retraining() -> None:
    @task(retries=3, retry_delay=timedelta(minutes=2), retry_exponential_backoff=True)
    def download(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Aggregated configurations from discodata into an immutable raw snapshot."""
        from airflow.sdk.exceptions import AirflowFailException

        from co2.discodata import DiscodataQueryError
        from co2.pipeline.download import download as run_download
        from co2.settings import get_settings
        from co2_airflow import metrics
        from co2_airflow.hooks import DiscodataHook

        settings = get_settings()
        params = params or {}
        try:
            years = [int(y) for y in params.get("years") or settings.years]
            source_url = DiscodataHook().resolve(params.get("source") or "", settings)
            result = run_download(settings, years, source_url)
        except (DiscodataQueryError, ValueError) as exc:  # a refused query or bad params: retrying cannot help
            raise AirflowFailException(str(exc)) from exc
        metrics.gauge("download", "rows", value=result.rows)
        metrics.gauge("download", "registrations", value=result.registrations)
        return result.to_dict()

    @task(retries=0)
    def validate(downloaded: dict[str, Any]) -> dict[str, Any]:
        """Check the raw snapshot against the declared schema; fail naming each broken check."""
        from pathlib import Path

        from airflow.sdk.exceptions import AirflowFailException

        from co2.pipeline.validate import DataValidationError
        from co2.pipeline.validate import validate as run_validate
        from co2.settings import get_settings
        from co2_airflow import metrics

        settings = get_settings()
        try:
            result = run_validate(Path(downloaded["snapshot_path"]), settings.reports_dir, min_rows=settings.min_rows)
        except DataValidationError as exc:  # the data will not change on a retry
            metrics.gauge("validate", "failures", value=exc.failures)
            raise AirflowFailException(str(exc)) from exc
        metrics.gauge("validate", "failures", value=0)
        return {**result.to_dict(), "snapshot_path": downloaded["snapshot_path"]}

    @task
    def preprocess(validated: dict[str, Any]) -> dict[str, Any]:
        """Normalise, clean and split by configuration hash; write the splits and their lineage."""
        from pathlib import Path

        from co2.pipeline.preprocess import preprocess as run_preprocess
        from co2.settings import get_settings
        from co2_airflow import metrics

        settings = get_settings()
        result = run_preprocess(
            Path(validated["snapshot_path"]),
            settings.processed_dir,
            test_fraction=settings.test_fraction,
            split_salt=settings.split_salt,
        )
        metrics.gauge("preprocess", "train_rows", value=result.train_rows)
        metrics.gauge("preprocess", "test_rows", value=result.test_rows)
        return result.to_dict()

    def train_task(family: str):  # returns a TaskFlow task
        @task(task_id=f"train_{family}")
        def train(processed: dict[str, Any], run_id: str | None = None) -> list[dict[str, Any]]:
            """Fit the family with and without the make; log both candidates to MLflow."""
            from pathlib import Path

            from co2.pipeline.train import train_family
            from co2.settings import get_settings
            from co2_airflow import metrics

            candidates = train_family(
                family, Path(processed["lineage_path"]), get_settings(), run_tags={"airflow.run_id": run_id or ""}
            )
            for candidate in candidates:
                metrics.gauge("train", candidate.name, "rmse_g_km", value=candidate.rmse_g_km)
                metrics.gauge("train", candidate.name, "mae_g_km", value=candidate.mae_g_km)
            return [c.to_dict() for c in candidates]

        return train

    @task
    def compare(
        processed: dict[str, Any],
        random_forest: list[dict[str, Any]],
        linear_regression: list[dict[str, Any]],
        knn: list[dict[str, Any]],
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Rank candidates on the shared test split; champion/challenger against production."""
        from pathlib import Path

        from co2.pipeline.compare import compare as run_compare
        from co2.settings import get_settings

        candidates = [*random_forest, *linear_regression, *knn]
        force = bool((params or {}).get("force_promotion", False))
        result = run_compare(candidates, Path(processed["lineage_path"]), get_settings(), force_promotion=force)
        return result.to_dict()

    @task
    def register(compared: dict[str, Any], processed: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
        """Register the winner; move the production alias only if it was promoted."""
        import time
        from pathlib import Path

        from co2.pipeline.register import register as run_register
        from co2.settings import get_settings
        from co2_airflow import metrics

        result = run_register(
            compared, Path(processed["lineage_path"]), get_settings(), extra_tags={"airflow.run_id": run_id or ""}
        )
        metrics.gauge("register", "promoted", value=int(result.promoted))
        if result.production_version is not None:
            metrics.gauge("register", "production_version", value=int(result.production_version))
        production_metrics = result.metrics if result.promoted else compared.get("champion_metrics")
        if production_metrics:
            metrics.gauge("register", "production_rmse_g_km", value=production_metrics["rmse_g_km"])
            metrics.gauge("register", "production_mae_g_km", value=production_metrics["mae_g_km"])
        # register is the last task: its end is the end of a successful retrain (alerted on when too old)
        metrics.gauge("register", "succeeded_at_unixtime", value=time.time())
        return result.to_dict()

    processed = preprocess(validate(download()))
    trained = {family: train_task(family)(processed) for family in ("random_forest", "linear_regression", "knn")}
    register(compare(processed, **trained), processed)


co2_retraining()
