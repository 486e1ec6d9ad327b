"""Where the discodata service is, as Airflow users expect to configure it: a connection."""

from __future__ import annotations

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from co2.discodata import SourcePolicy
from co2.settings import LIVE_DISCODATA_URL, Settings


class DiscodataHook(BaseHook):
    """Reads the discodata base URL from the Airflow connection `co2_discodata` (type http), if any.

    Without that connection the URL comes from `CO2_DISCODATA_URL`. A run's `source` param may
    point elsewhere only where `co2.discodata.SourcePolicy` allows.
    """

    conn_name_attr = "discodata_conn_id"
    default_conn_name = "co2_discodata"
    conn_type = "http"
    hook_name = "EEA discodata"

    def __init__(self, discodata_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.discodata_conn_id = discodata_conn_id

    def connection_url(self) -> str | None:
        try:
            conn = self.get_connection(self.discodata_conn_id)
        except AirflowNotFoundException:
            return None
        host = conn.host or ""
        if "://" in host:
            return host.rstrip("/")
        scheme = conn.schema or "https"
        port = f":{conn.port}" if conn.port else ""
        return f"{scheme}://{host}{port}" if host else None

    def resolve(self, source: str, settings: Settings) -> str:
        """The URL a run downloads from: empty (the connection, else CO2_DISCODATA_URL), `live`, or a URL
        that `SourcePolicy` allows (a DiscodataSourceError, a ValueError, naming the setting otherwise)."""
        source = (source or "").strip()
        connection = self.connection_url()
        if not source:
            return connection or settings.discodata_url
        url = LIVE_DISCODATA_URL if source == "live" else source
        return SourcePolicy.from_settings(settings, connection).check(url)
