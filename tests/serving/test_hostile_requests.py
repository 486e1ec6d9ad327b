"""Hostile requests cost the service little: bodies are capped as they stream, the key comes first,
CSV uploads are parsed off the event loop, and a 422 never echoes the input."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from co2.settings import Settings
from tests.serving.conftest import promote, ready_version, running_service, wait_for

KEY = "hostile-tests-key"
AUTH = {"X-API-Key": KEY}
GOOD = {"fuel_type": "PETROL", "mass_kg": 1300, "engine_power_kw": 80}
MiB = 2**20


@pytest.fixture(scope="module")
def service_url(mlflow_uri: str, model_uris) -> Iterator[str]:  # type: ignore[no-untyped-def]
    settings = Settings(
        mlflow_tracking_uri=mlflow_uri, model_name="co2-serving-hostile", poll_seconds=1.0, api_keys=[KEY]
    )
    promote(mlflow_uri, settings.model_name, model_uris["knn"])
    with running_service(settings) as url:
        wait_for(lambda: ready_version(url) is not None, 30)
        yield url


class HealthProbe:
    """Asks /health over and over from one thread, samples the process's memory from another:
    the slowest answer, and how much the memory grew at its peak."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.slowest_seconds = 0.0
        self.answers = 0
        self.baseline_rss = self.peak_rss = psutil.Process().memory_info().rss
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=task, daemon=True) for task in (self._probe, self._sample)]

    def _probe(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                began = time.perf_counter()
                assert client.get(f"{self.url}/health").status_code == 200
                self.slowest_seconds = max(self.slowest_seconds, time.perf_counter() - began)
                self.answers += 1
                time.sleep(0.01)

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, process.memory_info().rss)
            time.sleep(0.01)

    def __enter__(self) -> HealthProbe:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    @property
    def grown_mib(self) -> float:
        return (self.peak_rss - self.baseline_rss) / MiB


def upload(url: str, text: str) -> httpx.Response:
    return httpx.post(
        f"{url}/predict/batch/csv", files={"file": ("cars.csv", text, "text/csv")}, headers=AUTH, timeout=120
    )


def test_a_csv_of_a_million_rows_is_refused_without_stalling_the_service(service_url: str) -> None:
    text = "fuel_type\n" + "P\n" * (2 * MiB // 2)  # 2 MiB: a hundred times the car limit
    with HealthProbe(service_url) as probe:
        time.sleep(0.1)
        began = time.perf_counter()
        response = upload(service_url, text)
        answered_seconds = time.perf_counter() - began
        time.sleep(0.1)
    print(f"took {answered_seconds:.2f}s; /health at worst {probe.slowest_seconds:.3f}s; +{probe.grown_mib:.0f} MiB")
    assert response.status_code == 413, response.text[:300]
    assert "more than 10,000 cars" in response.json()["detail"]
    assert probe.answers >= 5 and probe.slowest_seconds < 0.25
    assert probe.grown_mib < 100


def test_a_full_csv_of_bad_cars_is_checked_off_the_event_loop(service_url: str) -> None:
    header = "fuel_type,mass_kg,engine_capacity_cm3,engine_power_kw,fuel_consumption_l_100km,wheelbase_mm"
    text = header + "\n" + "plutonium,-1,-1,-1,-1,-1\n" * 10_000  # 60,000 errors
    with HealthProbe(service_url) as probe:
        time.sleep(0.1)
        response = upload(service_url, text)
        time.sleep(0.1)
    print(f"/health at worst {probe.slowest_seconds:.3f}s over {probe.answers} probes, +{probe.grown_mib:.0f} MiB")
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert errors[0]["loc"] == ["cars", 0, "fuel_type"] and "unknown fuel type" in errors[0]["msg"]
    assert len(response.content) < 50_000 and "more errors" in errors[-1]["msg"]
    assert probe.slowest_seconds < 0.25


def raw_exchange(url: str, head: bytes, chunks: Iterator[bytes], wait_seconds: float) -> tuple[int, int, float]:
    """Send a request's head, then its body a chunk at a time while no answer came within `wait_seconds`
    of each, then wait for the answer: its status (0: none within 10 s), the body bytes sent, the seconds."""
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        began = time.perf_counter()
        sock.sendall(head)
        sent = 0
        for chunk in chunks:
            if select.select([sock], [], [], wait_seconds)[0]:
                break
            try:
                sock.sendall(chunk)
            except OSError:  # the service closed the connection: its answer is waiting
                break
            sent += len(chunk)
        answer = b""
        if select.select([sock], [], [], 10)[0]:
            with contextlib.suppress(ConnectionResetError):
                answer = sock.recv(65536)
        seconds = time.perf_counter() - began
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, sent, seconds


def test_a_huge_body_without_a_key_is_refused_before_it_is_read(service_url: str) -> None:
    declared = 54 * MiB
    head = (
        f"POST /predict/batch HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode()
    # the first 64 KiB of the body, then nothing more: only a service that does not wait for the rest answers
    status, sent, seconds = raw_exchange(service_url, head, iter([b" " * 64 * 1024]), wait_seconds=0)
    print(f"answered {status} in {seconds:.2f}s, {sent // 1024} KiB of {declared // MiB} MiB sent")
    assert status == 401 and seconds < 2


def test_bodies_are_capped_as_they_stream_in(service_url: str) -> None:
    from serving.limits import BODY_BYTES

    cap = BODY_BYTES["/predict/batch"]
    # no Content-Length: the body's size is known only by counting it
    head = (
        "POST /predict/batch HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    piece = b'{"fuel_type": "petrol"}, ' * 10_000

    def chunked() -> Iterator[bytes]:
        yield b"%x\r\n%s\r\n" % (10, b'{"cars": [')
        for _ in range(3 * cap // len(piece)):
            yield b"%x\r\n%s\r\n" % (len(piece), piece)
        yield b"%x\r\n%s\r\n0\r\n\r\n" % (len(b"{}]}"), b"{}]}")

    status, sent, seconds = raw_exchange(service_url, head, chunked(), wait_seconds=0.02)
    print(f"answered {status} after {sent / MiB:.1f} MiB (cap {cap / MiB:.1f} MiB) in {seconds:.2f}s")
    assert status == 413 and sent < cap + 8 * MiB

    declared = (
        "POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {KEY}\r\nContent-Length: {100 * MiB}\r\n\r\n"
    ).encode()
    status, sent, seconds = raw_exchange(service_url, declared, iter([]), wait_seconds=0)
    assert status == 413 and seconds < 2


def test_a_long_string_is_refused_without_being_echoed(service_url: str) -> None:
    long = "x" * 5_000_000
    response = httpx.post(f"{service_url}/predict", json={**GOOD, "fuel_type": long}, headers=AUTH, timeout=60)
    assert response.status_code == 413 and len(response.content) < 1_000
    batch = {"cars": [GOOD, {**GOOD, "fuel_type": "y" * 100_000, "make": "z" * 100_000}]}
    response = httpx.post(f"{service_url}/predict/batch", json=batch, headers=AUTH, timeout=60)
    assert response.status_code == 422 and len(response.content) < 1_000, response.text[:300]
    problems = {(tuple(e["loc"]), e["type"]) for e in response.json()["detail"]}
    too_long = "string_too_long"
    assert problems == {(("body", "cars", 1, "fuel_type"), too_long), (("body", "cars", 1, "make"), too_long)}
    assert all(set(error) == {"loc", "msg", "type"} for error in response.json()["detail"])
    unknown = httpx.post(f"{service_url}/predict/batch", json={"cars": [{**GOOD, "w" * 1000: 1}]}, headers=AUTH)
    assert unknown.status_code == 422 and len(unknown.content) < 1_000


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 400])
def test_a_number_that_is_not_finite_is_a_422_naming_the_field(service_url: str, number: str) -> None:
    body = f'{{"fuel_type": "PETROL", "mass_kg": 1300, "engine_power_kw": {number}}}'
    for route, content in (("/predict", body), ("/predict/batch", f'{{"cars": [{body}]}}')):
        response = httpx.post(
            f"{service_url}{route}", content=content, headers={**AUTH, "Content-Type": "application/json"}
        )
        assert response.status_code == 422, (route, response.status_code, response.text[:300])
        assert any(e["loc"][-1] == "engine_power_kw" for e in response.json()["detail"]), response.json()


def test_an_infinite_csv_cell_is_a_422_naming_row_and_field(service_url: str) -> None:
    response = upload(service_url, "fuel_type,mass_kg,engine_power_kw\nPETROL,1300,80\nDIESEL,inf,90\n")
    assert response.status_code == 422, response.text[:300]
    assert response.json()["detail"] == [
        {"loc": ["cars", 1, "mass_kg"], "msg": "Input should be a finite number", "type": "finite_number"}
    ]
