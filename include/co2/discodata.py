"""Client of the EEA discodata SQL service: paging, retries with exponential backoff, clear errors.

Where it may download from is decided by `SourcePolicy`: a run's `source` is a URL anyone who can
trigger the DAG chooses, and the workers must not become a way to read internal addresses (cloud
metadata, the platform's own services). For the same reason no error or log line repeats what a
server answered beyond its status, content type and length, except the `errors` messages of the
discodata protocol itself, shortened.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from co2.logs import get_logger
from co2.settings import LIVE_DISCODATA_URL, Settings

log = get_logger("co2.discodata")

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF_SECONDS = 60.0
DEFAULT_MAX_PAGES: int = Settings.model_fields["max_pages"].default
DEFAULT_MAX_RESPONSE_BYTES: int = Settings.model_fields["max_response_bytes"].default
MAX_ERROR_MESSAGES = 3
MAX_ERROR_MESSAGE_CHARS = 300

DEFAULT_PORTS = {"http": 80, "https": 443}
# Cloud instance metadata: never a discodata service, whatever the configuration says.
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class DiscodataError(RuntimeError):
    """The service could not give the rows: it kept failing, or it refused the query."""


class DiscodataUnavailableError(DiscodataError):
    """The service kept failing (5xx, time-outs, refused connections) through every retry."""


class DiscodataQueryError(DiscodataError):
    """The service refused the query (unknown table or column, bad syntax): retrying cannot help."""


class DiscodataLimitError(DiscodataQueryError):
    """The answer is beyond this platform's limits (bytes per answer, pages per query): retrying cannot help."""


class DiscodataSourceError(ValueError):
    """A source URL this platform will not download from; the message names the setting that allows it."""


def _origin(url: str) -> tuple[str, str, int] | None:
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").rstrip(".").lower()
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        return None
    return (scheme, host, port) if scheme in DEFAULT_PORTS and host else None


def _internal(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _internal(address.ipv4_mapped)
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )


def resolve_addresses(host: str, port: int) -> set[Address]:
    """Every address `host` resolves to; none when it does not resolve (the download then fails to connect)."""
    try:
        return {ipaddress.ip_address(host)}
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return set()
    return {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos}


@dataclass(frozen=True)
class SourcePolicy:
    """Which discodata URLs a run may download from.

    Allowed: the origins an operator configured (`CO2_DISCODATA_URL`, the `co2_discodata`
    connection), the hosts listed in `CO2_ALLOWED_SOURCE_HOSTS` (`host` or `host:port`), and the
    real service. Configured and listed hosts may be internal (the local emulator, a mirror); the
    real service's name must resolve to public addresses only, even where it is the configured
    source (the default); no host may resolve to a cloud metadata address. The names are resolved
    when the run starts, so a name that changes its address between this check and the download
    is not caught here.
    """

    configured_urls: tuple[str, ...]
    allowed_hosts: tuple[str, ...] = ()
    resolve: Callable[[str, int], set[Address]] = resolve_addresses

    @classmethod
    def from_settings(cls, settings: Settings, *configured_urls: str | None) -> SourcePolicy:
        urls = (settings.discodata_url, *(url for url in configured_urls if url))
        return cls(urls, tuple(settings.allowed_source_hosts))

    def check(self, url: str) -> str:
        """`url` without its trailing slash if a run may download from it, else a DiscodataSourceError."""
        parts = urlsplit(url.strip())
        if parts.scheme.lower() not in DEFAULT_PORTS:
            raise DiscodataSourceError(
                "source must be 'live' or an http(s) URL of an allowed host (CO2_ALLOWED_SOURCE_HOSTS), "
                f"not {url[:100]!r}"
            )
        if parts.username is not None or parts.password is not None:
            raise DiscodataSourceError(
                "source URL must not carry credentials (user:password@); "
                "name an allowed host (CO2_ALLOWED_SOURCE_HOSTS)"
            )
        origin = _origin(url.strip())
        if origin is None:
            raise DiscodataSourceError(f"source URL has no valid host or port: {url[:100]!r}")
        _, host, port = origin
        live = origin == _origin(LIVE_DISCODATA_URL)
        configured = origin in {_origin(u) for u in self.configured_urls} or self._listed(host, port)
        if not configured and not live:
            allowed = sorted({o[1] for u in (*self.configured_urls, LIVE_DISCODATA_URL) if (o := _origin(u))})
            raise DiscodataSourceError(
                f"source host {host}:{port} is not allowed (allowed: {', '.join(allowed)}, "
                f"CO2_ALLOWED_SOURCE_HOSTS={list(self.allowed_hosts)}); "
                "to download from it, add it to CO2_ALLOWED_SOURCE_HOSTS or set CO2_DISCODATA_URL"
            )
        for address in sorted(self.resolve(host, port), key=str):
            if address in METADATA_ADDRESSES or ((live or not configured) and _internal(address)):
                raise DiscodataSourceError(
                    f"source host {host} resolves to {address}, an internal address; a run downloads from internal "
                    "addresses only when their host is CO2_DISCODATA_URL's or listed in CO2_ALLOWED_SOURCE_HOSTS"
                )
        return url.strip().rstrip("/")

    def _listed(self, host: str, port: int) -> bool:
        for entry in self.allowed_hosts:
            listed = urlsplit(f"//{entry.strip()}")
            try:
                listed_port = listed.port
            except ValueError:
                continue
            if (listed.hostname or "").rstrip(".").lower() == host and listed_port in (None, port):
                return True
        return False


class DiscodataClient:
    """Runs T-SQL on discodata and pages through the answer, within a page count and a byte size."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_seconds: float = 120.0,
        retries: int = 5,
        backoff_seconds: float = 2.0,
        max_pages: int = DEFAULT_MAX_PAGES,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.max_pages = max_pages
        self.max_response_bytes = max_response_bytes
        self._sleep = sleep
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 10.0)), follow_redirects=False
        )

    @classmethod
    def from_settings(cls, settings: Settings, url: str | None = None) -> DiscodataClient:
        """A client of `url` (default CO2_DISCODATA_URL) with the configured timeouts, retries and limits."""
        return cls(
            url or settings.discodata_url,
            timeout_seconds=settings.http_timeout_seconds,
            retries=settings.http_retries,
            backoff_seconds=settings.http_backoff_seconds,
            max_pages=settings.max_pages,
            max_response_bytes=settings.max_response_bytes,
        )

    def __enter__(self) -> DiscodataClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def page(self, query: str, page: int, page_size: int) -> list[dict[str, Any]]:
        """One page of the answer (pages count from 1), retrying transient failures."""
        params: dict[str, str | int] = {"query": query, "p": page, "nrOfHits": page_size}
        body, response = self._get("/sql", params, f"page {page}")
        return _results(body, response, query)

    def metadata(self) -> Any:
        """The service's listing of its databases, schemas, tables and columns (`GET /md/`), as JSON."""
        body, response = self._get("/md/", {}, "the metadata listing")
        try:
            return json.loads(body)
        except ValueError:
            raise DiscodataError(f"discodata's metadata listing is not JSON ({_described(response)})") from None

    def _get(self, path: str, params: dict[str, str | int], what: str) -> tuple[bytes, httpx.Response]:
        """The body of a 200 answer to `GET path`, retrying transient failures with exponential backoff."""
        url = f"{self.base_url}{path}"
        for attempt in range(self.retries + 1):
            problem: str
            try:
                with self._http.stream("GET", url, params=params) as response:
                    if response.status_code in RETRYABLE_STATUS:
                        problem = f"HTTP {response.status_code}"
                    elif response.status_code != 200:
                        raise DiscodataError(
                            f"discodata at {self.base_url} answered HTTP {response.status_code} for {what} "
                            f"({_described(response)}); check CO2_DISCODATA_URL or the run's source"
                        )
                    else:
                        return self._body(response), response
            except httpx.TimeoutException as exc:
                problem = f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:  # refused, reset, dropped mid-answer
                problem = f"connection failed ({type(exc).__name__}: {exc})"
            if attempt == self.retries:
                raise DiscodataUnavailableError(
                    f"discodata at {self.base_url} failed {self.retries + 1} times for {what}, last: {problem}; "
                    "check that the service is up (CO2_DISCODATA_URL) or raise CO2_HTTP_RETRIES"
                )
            delay = min(self.backoff_seconds * 2**attempt, MAX_BACKOFF_SECONDS)
            log.warning("discodata_retry", request=what, attempt=attempt + 1, problem=problem, retry_in_seconds=delay)
            self._sleep(delay)
        raise AssertionError("unreachable")

    def _body(self, response: httpx.Response) -> bytes:
        """The answer's bytes, refused as soon as it is known to exceed the byte cap."""
        too_large = DiscodataLimitError(
            f"discodata's answer exceeds CO2_MAX_RESPONSE_BYTES={self.max_response_bytes} ({_described(response)}); "
            "lower CO2_PAGE_SIZE or raise CO2_MAX_RESPONSE_BYTES"
        )
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_response_bytes:
            raise too_large
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > self.max_response_bytes:
                raise too_large
        return bytes(body)

    def pages(self, query: str, page_size: int) -> Iterator[list[dict[str, Any]]]:
        """Every page of the answer, until an empty or short one, at most `max_pages` of them."""
        page = 1
        while True:
            if page > self.max_pages:
                raise DiscodataLimitError(
                    f"the query's answer goes on past CO2_MAX_PAGES={self.max_pages} pages of {page_size} rows; "
                    "raise CO2_MAX_PAGES or CO2_PAGE_SIZE if that many rows are expected"
                )
            rows = self.page(query, page, page_size)
            if rows:
                yield rows
            if len(rows) < page_size:
                return
            page += 1

    def count(self, table: str) -> int:
        """How many rows a published table has (one cheap aggregate on the server)."""
        rows = self.page(f"SELECT COUNT(*) AS n FROM {qualified(table)}", 1, 1)
        if not rows or not isinstance(rows[0].get("n"), int):
            raise DiscodataError(f"discodata did not count the rows of {table}")
        return int(rows[0]["n"])

    def columns(self, table: str) -> list[str]:
        """The column names of a published table (from its first row)."""
        rows = self.page(f"SELECT TOP 1 * FROM {qualified(table)}", 1, 1)
        if not rows:
            raise DiscodataQueryError(f"table {table} is empty: no columns to read")
        return list(rows[0])


def qualified(table: str) -> str:
    return f"[CO2Emission].[latest].[{table}]"


def _described(response: httpx.Response) -> str:
    """What may be said of an answer: its content type and length, never its content."""
    content_type = "".join(c for c in response.headers.get("Content-Type", "none")[:60] if c.isprintable())
    length = response.headers.get("Content-Length", "")
    return f"content type {content_type}, " + (f"{length} bytes" if length.isdigit() else "length not given")


def _results(body: bytes, response: httpx.Response, query: str) -> list[dict[str, Any]]:
    try:
        answer = json.loads(body)
    except ValueError:
        raise DiscodataError(f"discodata answered with something that is not JSON ({_described(response)})") from None
    if isinstance(answer, dict) and isinstance(answer.get("errors"), list) and answer["errors"]:
        raise DiscodataQueryError(f"discodata refused the query: {_error_messages(answer['errors'])}. Query: {query}")
    if not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
        raise DiscodataError(f"discodata's answer has no 'results' list ({_described(response)})")
    return answer["results"]


def _error_messages(errors: list[Any]) -> str:
    """The protocol's own error messages (they name the unknown table or column), a few and short."""
    described = []
    for error in errors[:MAX_ERROR_MESSAGES]:
        if isinstance(error, dict):
            message = "".join(c for c in str(error.get("error"))[:MAX_ERROR_MESSAGE_CHARS] if c.isprintable())
            described.append(f"{message} (errorcode {str(error.get('errorcode'))[:20]})")
    return "; ".join(described) or "an 'errors' answer without messages"
