"""Where the discodata service is, as Airflow users expect to configure it: a connection."""

from __future__ import annotations

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from co2.settings import LIVE_DISCODATA_URL, Settings


class DiscodataHook(BaseHook):
    """Reads the discodata base URL from the Airflow connection `co2_discodata` (type http), if any.

    Without that connection the URL comes from `CO2_DISCODATA_URL`.
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
        """The URL a run downloads from: `live`, an explicit URL, or (empty) the connection, then settings."""
        source = (source or "").strip()
        if source == "live":
            return LIVE_DISCODATA_URL
        if source.startswith(("http://", "https://")):
            return source.rstrip("/")
        if source:
            raise ValueError(f"source must be empty, 'live' or an http(s) URL, not {source!r}")
        return self.connection_url() or settings.discodata_url
