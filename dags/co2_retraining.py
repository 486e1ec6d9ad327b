"""
### CO₂ emissions model: retraining on each EEA release

Keeps the model `co2-emissions` in the MLflow registry up to date with the EEA's monitoring data
of new cars (WLTP CO₂ from mass, engine, power, fuel and eco-innovations). Runs when the watcher
`co2_eea_releases` sees a new EEA table (Asset `eea_co2_cars_releases`), and at least quarterly.

| step | what it does | writes |
|---|---|---|
| `discover` | reads discodata's metadata listing: per year the final table, else the newest provisional one; keeps the newest `CO2_WINDOW_YEARS` years (falls back to `CO2_EEA_TABLES` if the listing cannot be read) | the chosen tables, their row counts and fingerprint |
| `anything_new` | stops the run here (the rest skipped, the run a success) when production was trained on exactly these tables, unless forced | why, in its log |
| `download` | asks EEA discodata for one row per distinct vehicle configuration with its registration count (server-side `GROUP BY`), pages and retries | a new, read-only raw snapshot + metadata (sha256) under `CO2_DATA_DIR/raw/` |
| `validate` | declared schema: columns, types, physical ranges, null rates, fuel types, row count | a report under `CO2_DATA_DIR/reports/`; fails the run naming each failed check |
| `preprocess` | vocabulary (fuel types, makes), zero-emission rule, impossible values, untrusted fuel consumption, configuration-hashed train/test split | train/test Parquet + `lineage.json` |
| `train_*` | RandomForest, LinearRegression, KNN, each with and without the make, in parallel; each also backtested (fit without the newest year, scored on it) | one MLflow run per candidate |
| `compare` | ranks the candidates on the shared test split, scores production on it too | a report with the reason |
| `register` | registers the winner; moves the alias `production` only if it beats production (or `force_promotion`) | a model version with metrics and lineage tags |
| `report` | the run report on the winner's run: the data, their shift since production's training data (PSI), each candidate's errors, the decision | `report/report.html` and PNG figures in MLflow |

**Params** (the trigger form opens with each default, ready to submit): `years` (registration
years; empty: `CO2_YEARS`, else the newest `CO2_WINDOW_YEARS`), `tables` (year → table, e.g.
`{"2024": "co2cars_2024Fv30"}`; empty: discovered), `source` (empty: the Airflow connection
`co2_discodata`, else `CO2_DISCODATA_URL`; `live`: the EEA service; or an http(s) URL),
`force_retrain` (train even if nothing is new), `force_promotion` (also implies training).

A failed run changes nothing that works: raw snapshots are never overwritten and production
moves only in `register`. A task that fails for good mails `CO2_NOTIFY_EMAIL_TO` (DAG, run, task,
error, link to its log).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import AssetOrTimeSchedule, Param, dag, task
from airflow.sdk.serde import allow_class

from co2.pipeline.results import (
    STEP_RESULTS,
    Candidate,
    CompareResult,
    DiscoverResult,
    DownloadResult,
    PreprocessResult,
    RegisterResult,
    ReportResult,
    ValidationResult,
)
from co2_airflow.assets import EEA_RELEASES
from co2_airflow.notify import FailureMail
from co2_airflow.timetables import next_fire_time_only
from co2_model.families import FAMILIES

RETRIES = {"retries": 2, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": True}
# The steps hand each other the dataclasses they return: Airflow rebuilds only the classes it is told to.
for result_class in STEP_RESULTS:
    allow_class(result_class)


@dag(
    dag_id="co2_retraining",
    # On each new EEA release the watcher reports, and quarterly at the latest: the first timed run is
    # the next quarter, not one for a quarter already past when the DAG is first unpaused.
    schedule=AssetOrTimeSchedule(timetable=next_fire_time_only("0 0 1 */3 *"), assets=[EEA_RELEASES]),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["co2", "mlops", "retraining"],
    # a task that fails for good mails CO2_NOTIFY_EMAIL_TO (settings read when it fires, not at parse time)
    default_args={"owner": "co2", **RETRIES, "on_failure_callback": FailureMail()},
    params={
        "years": Param(
            [], type="array", items={"type": "integer"}, description="Registration years; empty: CO2_YEARS."
        ),
        # Optional (null allowed, null by default): the trigger form treats a param whose type has no
        # "null" as required, and refuses to submit it empty.
        "tables": Param(
            None,
            type=["null", "object"],
            description='Year -> EEA table, e.g. {"2024": "co2cars_2024Fv30"}; empty: the newest releases listed.',
        ),
        "source": Param(
            None,
            type=["null", "string"],
            pattern=r"^(live|https?://\S+)?$",
            description="Empty: connection co2_discodata or CO2_DISCODATA_URL; 'live'; or an http(s) URL.",
        ),
        "force_retrain": Param(
            False, type="boolean", description="Train even if production was trained on the same tables."
        ),
        "force_promotion": Param(
            False, type="boolean", description="Promote the best candidate even if it does not beat production."
        ),
    },
)
def co2_retraining() -> None:
    @task(retries=3, retry_delay=timedelta(minutes=2), retry_exponential_backoff=True)
    def discover(params: dict[str, Any] | None = None) -> DiscoverResult:
        """The newest EEA tables of the window, and whether production was already trained on them."""
        from airflow.sdk.exceptions import AirflowFailException

        from co2.discodata import DiscodataSourceError
        from co2.pipeline.discover import discover_step
        from co2.settings import get_settings
        from co2_airflow import metrics
        from co2_airflow.hooks import DiscodataHook

        settings = get_settings()
        params = params or {}
        try:
            source_url = DiscodataHook().resolve(params.get("source") or "", settings)
            result = discover_step(
                settings,
                source_url,
                years=[int(y) for y in params.get("years") or []],
                tables={int(y): str(t) for y, t in (params.get("tables") or {}).items()},
                force=bool(params.get("force_retrain") or params.get("force_promotion")),
            )
        except (DiscodataSourceError, ValueError) as exc:  # bad params or settings: retrying cannot help
            raise AirflowFailException(str(exc)) from exc
        metrics.gauge("discover", "fallback", value=int(result.discovery["tables_from"] == "fallback"))
        metrics.gauge("discover", "newest_year", value=max(result.discovery["years"]))
        return result

    @task.short_circuit
    def anything_new(discovered: DiscoverResult) -> bool:
        """Go on only if there is something new to train on; else the run ends here, a success."""
        import logging
        import time

        from co2_airflow import metrics

        logging.getLogger("airflow.task").info("%s (%s)", discovered.reason, discovered.discovery["note"])
        metrics.gauge("discover", "nothing_new", value=int(not discovered.retrain))
        if not discovered.retrain:  # production is current: as healthy as a retrain (CO2RetrainingOverdue)
            metrics.gauge("retraining", "current_at_unixtime", value=time.time())
        return discovered.retrain

    @task(retries=3, retry_delay=timedelta(minutes=2), retry_exponential_backoff=True)
    def download(discovered: DiscoverResult) -> DownloadResult:
        """Aggregated configurations of the chosen tables into an immutable raw snapshot."""
        from airflow.sdk.exceptions import AirflowFailException

        from co2.discodata import DiscodataQueryError
        from co2.pipeline.download import download as run_download
        from co2.settings import get_settings
        from co2_airflow import metrics

        discovery = discovered.discovery
        tables = {int(year): table for year, table in discovery["tables"].items()}
        try:
            result = run_download(get_settings(), tables, discovered.source_url, discovery=discovery)
        except DiscodataQueryError as exc:  # a refused query (an unpublished table): retrying cannot help
            raise AirflowFailException(str(exc)) from exc
        metrics.gauge("download", "rows", value=result.rows)
        metrics.gauge("download", "registrations", value=result.registrations)
        return result

    @task(retries=0)
    def validate(downloaded: DownloadResult) -> ValidationResult:
        """Check the raw snapshot against the declared schema; fail naming each broken check."""
        from pathlib import Path

        from airflow.sdk.exceptions import AirflowFailException

        from co2.pipeline.validate import DataValidationError
        from co2.pipeline.validate import validate as run_validate
        from co2.settings import get_settings
        from co2_airflow import metrics

        settings = get_settings()
        try:
            result = run_validate(Path(downloaded.snapshot_path), settings.reports_dir, min_rows=settings.min_rows)
        except DataValidationError as exc:  # the data will not change on a retry
            metrics.gauge("validate", "failures", value=exc.failures)
            raise AirflowFailException(str(exc)) from exc
        metrics.gauge("validate", "failures", value=0)
        return result

    @task
    def preprocess(validated: ValidationResult) -> PreprocessResult:
        """Normalise, clean and split by configuration hash; write the splits and their lineage."""
        from pathlib import Path

        from co2.pipeline.preprocess import preprocess as run_preprocess
        from co2.settings import get_settings
        from co2_airflow import metrics

        settings = get_settings()
        result = run_preprocess(
            Path(validated.snapshot_path),
            settings.processed_dir,
            test_fraction=settings.test_fraction,
            split_salt=settings.split_salt,
        )
        metrics.gauge("preprocess", "train_rows", value=result.train_rows)
        metrics.gauge("preprocess", "test_rows", value=result.test_rows)
        return result

    def train_task(family: str):  # returns a TaskFlow task
        @task(task_id=f"train_{family}")
        def train(processed: PreprocessResult, run_id: str | None = None) -> list[Candidate]:
            """Fit the family with and without the make; log both candidates to MLflow."""
            from pathlib import Path

            from co2.pipeline.train import train_family
            from co2.settings import get_settings
            from co2_airflow import metrics

            candidates = train_family(
                family, Path(processed.lineage_path), get_settings(), run_tags={"airflow.run_id": run_id or ""}
            )
            for candidate in candidates:
                metrics.gauge("train", candidate.name, "rmse_g_km", value=candidate.rmse_g_km)
                metrics.gauge("train", candidate.name, "mae_g_km", value=candidate.mae_g_km)
            return candidates

        return train

    @task
    def compare(
        processed: PreprocessResult, trained: list[list[Candidate]], params: dict[str, Any] | None = None
    ) -> CompareResult:
        """Rank candidates on the shared test split; champion/challenger against production."""
        from pathlib import Path

        from co2.pipeline.compare import compare as run_compare
        from co2.settings import get_settings

        candidates = [candidate for family in trained for candidate in family]
        force = bool((params or {}).get("force_promotion", False))
        return run_compare(candidates, Path(processed.lineage_path), get_settings(), force_promotion=force)

    @task
    def register(compared: CompareResult, processed: PreprocessResult, run_id: str | None = None) -> RegisterResult:
        """Register the winner; move the production alias only if it was promoted."""
        import time
        from pathlib import Path

        from co2.pipeline.register import register as run_register
        from co2.settings import get_settings
        from co2_airflow import metrics

        result = run_register(
            compared, Path(processed.lineage_path), get_settings(), extra_tags={"airflow.run_id": run_id or ""}
        )
        metrics.gauge("register", "promoted", value=int(result.promoted))
        if result.production_version is not None:
            metrics.gauge("register", "production_version", value=int(result.production_version))
        production_metrics = result.metrics if result.promoted else compared.champion_metrics
        if production_metrics:
            metrics.gauge("register", "production_rmse_g_km", value=production_metrics["rmse_g_km"])
            metrics.gauge("register", "production_mae_g_km", value=production_metrics["mae_g_km"])
        # register is the last task: its end is the end of a successful retrain (alerted on when too old)
        metrics.gauge("retraining", "current_at_unixtime", value=time.time())
        return result

    @task
    def report(compared: CompareResult, processed: PreprocessResult, validated: ValidationResult) -> ReportResult:
        """Log the run report (figures and one HTML page) on the winner's MLflow run."""
        from pathlib import Path

        from co2.pipeline.report import build_report
        from co2.settings import get_settings

        return build_report(
            compared, Path(processed.lineage_path), get_settings(), validation_report_path=validated.report_path
        )

    discovered = discover()
    downloaded = download(discovered)
    anything_new(discovered) >> downloaded
    validated = validate(downloaded)
    processed = preprocess(validated)
    compared = compare(processed, [train_task(family)(processed) for family in FAMILIES])
    register(compared, processed)
    report(compared, processed, validated)


co2_retraining()
