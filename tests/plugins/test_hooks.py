"""The discodata hook: a run's `source` param resolves only to hosts the platform allows."""

from __future__ import annotations

import json

import pytest

from co2.discodata import DiscodataSourceError
from co2.settings import LIVE_DISCODATA_URL, Settings

CONNECTION_URL = "https://discodata.mirror.example:8443"


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The hook with the `co2_discodata` connection defined in the environment, as a deployment may."""
    from co2_airflow.hooks import DiscodataHook

    connection = {"conn_type": "http", "host": "discodata.mirror.example", "schema": "https", "port": 8443}
    monkeypatch.setenv("AIRFLOW_CONN_CO2_DISCODATA", json.dumps(connection))
    return DiscodataHook()


def test_empty_source_is_the_connection(hook, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    assert hook.resolve("", settings) == CONNECTION_URL


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("live", LIVE_DISCODATA_URL),
        (f"{CONNECTION_URL}/", CONNECTION_URL),
        ("http://127.0.0.1:8765/", "http://127.0.0.1:8765"),  # the configured CO2_DISCODATA_URL
    ],
)
def test_allowed_sources(hook, settings: Settings, source: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    settings = settings.model_copy(update={"discodata_url": "http://127.0.0.1:8765"})
    assert hook.resolve(source, settings) == expected


@pytest.mark.parametrize(
    "source",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:5000/",  # MLflow on the same machine, not the configured source
        "http://localhost:8080/api/v2/",
        "file:///etc/passwd",
        "discodata.eea.europa.eu",
    ],
)
def test_other_sources_fail_the_run_naming_the_setting(hook, settings: Settings, source: str) -> None:  # type: ignore[no-untyped-def]
    settings = settings.model_copy(update={"discodata_url": "http://127.0.0.1:8765"})
    with pytest.raises(DiscodataSourceError, match="CO2_ALLOWED_SOURCE_HOSTS") as raised:
        hook.resolve(source, settings)
    assert isinstance(raised.value, ValueError)  # the DAG fails such a run at once, without retries
