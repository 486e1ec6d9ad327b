"""The client pages, retries transient failures with backoff, and fails clearly on the rest."""

from __future__ import annotations

import httpx
import pytest

from co2.discodata import DiscodataClient, DiscodataError, DiscodataQueryError, qualified

QUERY = f"SELECT [ID] FROM {qualified('co2cars_2021Pv23')} ORDER BY [ID]"


def faults(url: str, **body: object) -> None:
    httpx.post(f"{url}/_emulator/faults", json=body).raise_for_status()


def client(url: str, retries: int = 3, timeout: float = 5.0) -> tuple[DiscodataClient, list[float]]:
    sleeps: list[float] = []
    return DiscodataClient(
        url, retries=retries, backoff_seconds=0.5, timeout_seconds=timeout, sleep=sleeps.append
    ), sleeps


def test_pages_through_the_whole_answer(emulator_url: str) -> None:
    c, _ = client(emulator_url)
    pages = list(c.pages(QUERY, 1000))
    assert [len(p) for p in pages] == [1000, 1000, 1000, 1000]


def test_retries_500s_with_exponential_backoff(emulator_url: str) -> None:
    faults(emulator_url, mode="error500", count=3)
    c, sleeps = client(emulator_url, retries=3)
    assert len(c.page(QUERY, 1, 10)) == 10
    assert sleeps == [0.5, 1.0, 2.0]


def test_retries_dropped_connections(emulator_url: str) -> None:
    faults(emulator_url, mode="drop", count=2)
    c, sleeps = client(emulator_url)
    assert len(c.page(QUERY, 1, 10)) == 10
    assert len(sleeps) == 2


def test_retries_timeouts(emulator_url: str) -> None:
    faults(emulator_url, mode="slow", count=1, delay_seconds=1.5)
    c, sleeps = client(emulator_url, timeout=0.5)
    assert len(c.page(QUERY, 1, 10)) == 10
    assert len(sleeps) == 1


def test_gives_up_with_a_clear_message(emulator_url: str) -> None:
    faults(emulator_url, mode="error500", count=100)
    c, sleeps = client(emulator_url, retries=2)
    with pytest.raises(DiscodataError, match=r"failed 3 times for page 1, last: HTTP 500.*CO2_DISCODATA_URL"):
        c.page(QUERY, 1, 10)
    assert len(sleeps) == 2


def test_errors_answer_is_not_retried(emulator_url: str) -> None:
    c, sleeps = client(emulator_url)
    with pytest.raises(DiscodataQueryError, match=r"Invalid object name.*errorcode 10003"):
        c.page("SELECT TOP 1 * FROM [CO2Emission].[latest].[nope]", 1, 10)
    assert sleeps == []


def test_unreachable_server_is_retried_then_reported() -> None:
    c, sleeps = client("http://127.0.0.1:9", retries=1)
    with pytest.raises(DiscodataError, match="connection failed"):
        c.page(QUERY, 1, 10)
    assert len(sleeps) == 1
