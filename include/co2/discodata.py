"""Client of the EEA discodata SQL service: paging, retries with exponential backoff, clear errors."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from co2.logs import get_logger

log = get_logger("co2.discodata")

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF_SECONDS = 60.0


class DiscodataError(RuntimeError):
    """The service could not give the rows: it kept failing, or it refused the query."""


class DiscodataQueryError(DiscodataError):
    """The service refused the query (unknown table or column, bad syntax): retrying cannot help."""


class DiscodataClient:
    """Runs T-SQL on discodata and pages through the answer."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_seconds: float = 120.0,
        retries: int = 5,
        backoff_seconds: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self._sleep = sleep
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 10.0)))

    def __enter__(self) -> DiscodataClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def page(self, query: str, page: int, page_size: int) -> list[dict[str, Any]]:
        """One page of the answer (pages count from 1), retrying transient failures."""
        params: dict[str, str | int] = {"query": query, "p": page, "nrOfHits": page_size}
        url = f"{self.base_url}/sql"
        for attempt in range(self.retries + 1):
            problem: str
            try:
                response = self._http.get(url, params=params)
            except httpx.TimeoutException as exc:
                problem = f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:  # refused, reset, dropped mid-answer
                problem = f"connection failed ({type(exc).__name__}: {exc})"
            else:
                if response.status_code in RETRYABLE_STATUS:
                    problem = f"HTTP {response.status_code}"
                elif response.status_code != 200:
                    raise DiscodataError(
                        f"discodata answered HTTP {response.status_code} for page {page}: {response.text[:300]}"
                    )
                else:
                    return _results(response, query)
            if attempt == self.retries:
                raise DiscodataError(
                    f"discodata at {self.base_url} failed {self.retries + 1} times for page {page}, last: {problem}; "
                    "check that the service is up (CO2_DISCODATA_URL) or raise CO2_HTTP_RETRIES"
                )
            delay = min(self.backoff_seconds * 2**attempt, MAX_BACKOFF_SECONDS)
            log.warning("discodata_retry", page=page, attempt=attempt + 1, problem=problem, retry_in_seconds=delay)
            self._sleep(delay)
        raise AssertionError("unreachable")

    def pages(self, query: str, page_size: int) -> Iterator[list[dict[str, Any]]]:
        """Every page of the answer, until an empty or short one."""
        page = 1
        while True:
            rows = self.page(query, page, page_size)
            if rows:
                yield rows
            if len(rows) < page_size:
                return
            page += 1

    def columns(self, table: str) -> list[str]:
        """The column names of a published table (from its first row)."""
        rows = self.page(f"SELECT TOP 1 * FROM {qualified(table)}", 1, 1)
        if not rows:
            raise DiscodataQueryError(f"table {table} is empty: no columns to read")
        return list(rows[0])


def qualified(table: str) -> str:
    return f"[CO2Emission].[latest].[{table}]"


def _results(response: httpx.Response, query: str) -> list[dict[str, Any]]:
    try:
        body = response.json()
    except ValueError:
        raise DiscodataError(f"discodata answered with something that is not JSON: {response.text[:200]!r}") from None
    if isinstance(body, dict) and body.get("errors"):
        described = "; ".join(f"{e.get('error')} (errorcode {e.get('errorcode')})" for e in body["errors"])
        raise DiscodataQueryError(f"discodata refused the query: {described}. Query: {query}")
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        raise DiscodataError(f"discodata answer has no 'results' list: {str(body)[:200]}")
    return body["results"]
