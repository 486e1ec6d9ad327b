"""The one settings object of the platform, read from the environment (see `.env.example`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LIVE_DISCODATA_URL = "https://discodata.eea.europa.eu"

# The tables a run falls back to when discodata's metadata listing cannot be read: the newest
# release of each year known when this was written (F final, P provisional). A run normally finds
# the newest ones itself (co2.releases); setting CO2_EEA_TABLES='{"2021": "co2cars_2021Fv24", ...}'
# pins them instead.
DEFAULT_EEA_TABLES: dict[int, str] = {
    2020: "co2cars_2020Fv22",
    2021: "co2cars_2021Fv24",
    2022: "co2cars_2022Fv26",
    2023: "co2cars_2023Fv28",
    2024: "co2cars_2024Fv30",
    2025: "co2cars_2025Pv31",
}


class Settings(BaseSettings):
    """Everything the pipeline, the emulator and the prediction service read from the environment."""

    model_config = SettingsConfigDict(
        env_prefix="CO2_",
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
    )

    mlflow_tracking_uri: str = Field(
        default="http://127.0.0.1:5000",
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "CO2_MLFLOW_TRACKING_URI"),
        description="MLflow tracking server and model registry.",
    )
    discodata_url: str = Field(
        default=LIVE_DISCODATA_URL,
        description="Base URL of the EEA discodata SQL service (or of the local emulator).",
    )
    eea_tables: dict[int, str] = Field(
        default_factory=lambda: dict(DEFAULT_EEA_TABLES),
        description=(
            "EEA table per registration year, in [CO2Emission].[latest]. Set: these tables, no discovery; "
            "unset: the newest release of each year listed by discodata's metadata, these as the fallback."
        ),
    )
    years: list[int] = Field(
        default_factory=list, description="Registration years a run trains on; empty: the newest `window_years`."
    )
    window_years: int = Field(
        default=3, ge=1, le=20, description="How many of the newest registration years a run trains on."
    )
    data_dir: Path = Field(default=Path("data"), description="Raw snapshots, processed splits, reports.")
    model_name: str = "co2-emissions"
    model_alias: str = "production"
    experiment_name: str = "co2-emissions"

    # discodata client
    page_size: int = Field(default=50_000, ge=1, le=100_000)
    http_timeout_seconds: float = Field(default=120.0, gt=0)
    http_retries: int = Field(default=5, ge=0)
    http_backoff_seconds: float = Field(default=2.0, ge=0)
    allowed_source_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Hosts (or host:port) a run's `source` may name besides CO2_DISCODATA_URL's, the co2_discodata "
            "connection's and discodata.eea.europa.eu; private, loopback and link-local addresses are refused "
            "unless their host is named here or there."
        ),
    )
    max_pages: int = Field(default=1_000, ge=1, description="Most pages one query may take before the download stops.")
    max_response_bytes: int = Field(
        default=256 * 2**20, ge=1, description="Largest discodata answer read; a bigger one is refused unread."
    )

    # validation and training
    min_rows: int = Field(default=1_000, ge=1, description="Fewest configurations a snapshot may have.")
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    split_salt: str = Field(default="co2", description="Salt of the configuration hash that splits train/test.")
    random_seed: int = 42
    min_improvement_g_km: float = Field(
        default=0.01, ge=0, description="MAE gain a challenger needs over production to be promoted."
    )

    # local platform (`co2 up`, `co2 run`)
    home: Path | None = Field(default=None, description="State of the local platform; default .co2 in the checkout.")
    mlflow_port: int = 5000
    emulator_port: int = 8765
    airflow_port: int = 8080
    api_port: int = 8000
    prometheus_port: int = 9090
    statsd_port: int = Field(default=8125, description="UDP port of the local StatsD bridge.")
    statsd_exporter_port: int = Field(default=9102, description="HTTP port of the StatsD bridge's /metrics.")
    alertmanager_port: int = Field(default=9093, description="HTTP port of the local Alertmanager.")
    airflow_database_url: str = Field(default="", description="Airflow's metadata DB; empty: SQLite in CO2_HOME.")
    mlflow_database_url: str = Field(default="", description="MLflow's backend store; empty: SQLite in CO2_HOME.")
    executor: Literal["LocalExecutor", "CeleryExecutor"] = "LocalExecutor"
    celery_workers: int = Field(default=1, ge=1, description="`airflow celery worker` processes (CeleryExecutor).")
    celery_broker_url: str = "redis://127.0.0.1:6379/0"
    airflow_admin_user: str = "admin"
    airflow_admin_password: str = Field(default="", description="Empty: generated once, kept in CO2_HOME.")
    log_level: str = "INFO"
    emulator_query_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Longest a query may run on the local discodata server before it is stopped."
    )
    emulator_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the local discodata server answers besides localhost and its own address.",
    )

    # notifications: a failed task mails CO2_NOTIFY_EMAIL_TO; alerts go to CO2_ALERT_WEBHOOK_URL
    notify_email_to: list[str] = Field(
        default_factory=list, description="Who is mailed when a task of a DAG run fails; empty: nobody."
    )
    notify_email_from: str = Field(default="co2-airflow@localhost", description="Sender of the failure mails.")
    notify_smtp_host: str = Field(default="localhost", description="SMTP server the failure mails go through.")
    notify_smtp_port: int = Field(default=25, ge=1, le=65535)
    notify_smtp_starttls: bool = Field(default=False, description="Switch the SMTP connection to TLS first.")
    notify_smtp_user: str = Field(default="", description="SMTP login; empty: none.")
    notify_smtp_password: SecretStr = Field(default=SecretStr(""), description="Password of the SMTP login.")
    notify_airflow_url: str = Field(
        default="",
        description="Airflow's address as the recipients reach it, for the task log's link; empty: [api] base_url.",
    )
    alert_webhook_url: str = Field(
        default="",
        description="Where the local Alertmanager (co2 up) POSTs alerts (webhook); empty: shown on its page only.",
    )

    # prediction service
    poll_seconds: float = Field(
        default=30.0, gt=0, description="Seconds between registry polls (a webhook event polls at once)."
    )
    webhook_url: str = Field(
        default="",
        description="Where MLflow reaches the service's /registry/events; empty: no webhook, polling only.",
    )
    webhook_secret: SecretStr = Field(
        default=SecretStr(""), description="HMAC secret of the registry webhook; empty: no webhook, polling only."
    )
    api_keys: list[str] = Field(default_factory=list, description="Accepted X-API-Key values; empty: open.")

    # prediction page (`co2 ui`): a client of the prediction service, its key kept server-side
    ui_host: str = Field(default="127.0.0.1", description="Address the prediction page listens on.")
    ui_port: int = Field(default=8501, description="Port of the prediction page.")
    ui_api_url: str = Field(default="", description="The prediction service the page calls; empty: 127.0.0.1:api_port.")
    ui_api_key: SecretStr = Field(
        default=SecretStr(""), description="X-API-Key the page sends; empty: the first of `api_keys`, if any."
    )
    ui_mlflow_url: str = Field(
        default="", description="MLflow as the page's readers reach it (links to runs); empty: MLFLOW_TRACKING_URI."
    )

    @field_validator("discodata_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def table_for(self, year: int) -> str:
        """The discodata table of one registration year, or a clear error naming the setting."""
        try:
            return self.eea_tables[year]
        except KeyError:
            known = ", ".join(str(y) for y in sorted(self.eea_tables))
            raise ValueError(
                f"no EEA table configured for year {year} (known years: {known}); "
                f'add it to CO2_EEA_TABLES, e.g. CO2_EEA_TABLES=\'{{"{year}": "co2cars_{year}Pv.."}}\''
            ) from None

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def processed_dir(self) -> Path:
        return self.data_dir / "processed"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests call `get_settings.cache_clear()` after changing the environment."""
    return Settings()
