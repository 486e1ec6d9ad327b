"""The client pages, retries transient failures with backoff, and fails clearly on the rest."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from co2.discodata import (
    Address,
    DiscodataClient,
    DiscodataError,
    DiscodataLimitError,
    DiscodataQueryError,
    DiscodataSourceError,
    SourcePolicy,
    qualified,
)
from co2.settings import LIVE_DISCODATA_URL, Settings

pytestmark = pytest.mark.server  # the client against HTTP servers on loopback ports

QUERY = f"SELECT [ID] FROM {qualified('co2cars_2021Fv24')} ORDER BY [ID]"


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


# --- where a run may download from, and what of an answer may be repeated ------------------------
def policy(settings: Settings, **kwargs: Any) -> SourcePolicy:
    return SourcePolicy.from_settings(settings.model_copy(update=kwargs))


def test_the_configured_url_and_the_live_service_are_allowed(settings: Settings, emulator_url: str) -> None:
    allowed = policy(settings, discodata_url=emulator_url)
    assert allowed.check(f"{emulator_url}/") == emulator_url  # loopback, but it is the configured source
    assert allowed.check(LIVE_DISCODATA_URL) == LIVE_DISCODATA_URL
    connection = SourcePolicy.from_settings(settings, "https://discodata.mirror.example:8443")
    assert connection.check("https://discodata.mirror.example:8443/") == "https://discodata.mirror.example:8443"


@pytest.mark.parametrize(
    "source",
    [
        "http://127.0.0.1:9/",  # loopback, another port than the configured source's
        "http://localhost:{port}",  # resolves to loopback; not the configured name
        "http://[::1]:{port}",
        "http://0.0.0.0:{port}",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.7:8765",
        "https://discodata.eea.europa.eu.attacker.example",
        "http://discodata.eea.europa.eu@127.0.0.1:{port}",
        "file:///etc/passwd",
        "gopher://127.0.0.1:{port}/",
    ],
)
def test_other_hosts_are_refused_naming_the_setting(settings: Settings, emulator_url: str, source: str) -> None:
    port = emulator_url.rsplit(":", 1)[1]
    with pytest.raises(DiscodataSourceError, match="CO2_ALLOWED_SOURCE_HOSTS"):
        policy(settings, discodata_url=emulator_url).check(source.format(port=port))


def test_listed_hosts_are_allowed_on_their_port(settings: Settings) -> None:
    listed = policy(settings, allowed_source_hosts=["localhost:8765", "mirror.example"])
    assert listed.check("http://localhost:8765") == "http://localhost:8765"  # 127.0.0.1, but listed
    assert listed.check("https://mirror.example/") == "https://mirror.example"
    with pytest.raises(DiscodataSourceError, match="CO2_ALLOWED_SOURCE_HOSTS"):
        listed.check("http://localhost:5000")


def test_the_live_service_must_resolve_to_public_addresses(settings: Settings) -> None:
    """Were its name to resolve to an internal address (a poisoned resolver), the run refuses it."""

    def resolver(answer: str) -> Callable[[str, int], set[Address]]:
        return lambda host, port: {ipaddress.ip_address(answer)}

    base = SourcePolicy.from_settings(settings)
    for internal in ("10.1.2.3", "127.0.0.1", "169.254.169.254", "::ffff:192.168.0.1"):
        shown = re.escape(str(ipaddress.ip_address(internal)))
        with pytest.raises(DiscodataSourceError, match=f"resolves to {shown}.*CO2_ALLOWED_SOURCE_HOSTS"):
            dataclasses.replace(base, resolve=resolver(internal)).check(LIVE_DISCODATA_URL)
    assert dataclasses.replace(base, resolve=resolver("8.8.8.8")).check(LIVE_DISCODATA_URL) == LIVE_DISCODATA_URL


def test_cloud_metadata_is_refused_even_when_listed(settings: Settings) -> None:
    with pytest.raises(DiscodataSourceError, match=r"169\.254\.169\.254, an internal address"):
        policy(settings, allowed_source_hosts=["169.254.169.254"]).check("http://169.254.169.254/latest/meta-data/")


SECRET = "internal-secret-7f3a9"


class _Canned(BaseHTTPRequestHandler):
    """Answers every GET with the server's `canned` (status, content type, body, with Content-Length?)."""

    server: Any
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        status, content_type, body, with_length = self.server.canned
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if with_length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if with_length:
            self.wfile.write(body)
        else:
            for start in range(0, len(body), 65536):
                chunk = body[start : start + 65536]
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")


class _CannedServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # the client hangs up on answers it refuses: expected here


@pytest.fixture
def canned() -> Iterator[ThreadingHTTPServer]:
    server = _CannedServer(("127.0.0.1", 0), _Canned)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def url_of(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize(
    ("status", "content_type", "body"),
    [
        (404, "text/html", f"<h1>Not found</h1><p>{SECRET}</p>"),
        (403, "application/json", json.dumps({"detail": SECRET})),
        (200, "text/plain", f"ami-id\ninstance-id\n{SECRET}"),
        (200, "application/json", json.dumps({"token": SECRET})),
        (200, "application/json", json.dumps({"errors": SECRET})),
    ],
)
def test_errors_never_repeat_what_the_server_answered(
    canned: ThreadingHTTPServer, status: int, content_type: str, body: str
) -> None:
    canned.canned = (status, content_type, body.encode(), True)  # type: ignore[attr-defined]
    c, _ = client(url_of(canned))
    with pytest.raises(DiscodataError) as raised:
        c.page(QUERY, 1, 10)
    assert SECRET not in str(raised.value)
    assert content_type in str(raised.value) and f"{len(body.encode())} bytes" in str(raised.value)


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "chunked"])
def test_an_oversized_answer_is_refused(canned: ThreadingHTTPServer, with_length: bool) -> None:
    rows = json.dumps({"results": [{"ID": i, "padding": "x" * 100} for i in range(30_000)]}).encode()  # ~3.6 MB
    canned.canned = (200, "application/json", rows, with_length)  # type: ignore[attr-defined]
    c = DiscodataClient(url_of(canned), retries=0, max_response_bytes=2**20)
    with pytest.raises(DiscodataLimitError, match="CO2_MAX_RESPONSE_BYTES=1048576"):
        c.page(QUERY, 1, 30_000)
    assert len(DiscodataClient(url_of(canned), retries=0).page(QUERY, 1, 30_000)) == 30_000  # the default allows it


def test_a_query_stops_after_the_maximum_number_of_pages(emulator_url: str) -> None:
    c = DiscodataClient(emulator_url, retries=0, max_pages=3)
    with pytest.raises(DiscodataLimitError, match="CO2_MAX_PAGES=3"):
        list(c.pages(QUERY, 100))  # 4,000 rows: 40 pages
