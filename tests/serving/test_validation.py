"""Every bad input gets a 422 naming the field and the rule; the OpenAPI schema holds under fuzzing."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case

from co2.settings import Settings
from tests.serving.conftest import promote, ready_version, running_service, wait_for

GOOD = {"fuel_type": "PETROL", "mass_kg": 1300, "engine_power_kw": 80}
HYBRID = {"fuel_type": "PETROL/ELECTRIC", "mass_kg": 1700, "engine_power_kw": 110}  # plug-in or not?


@pytest.fixture(scope="module")
def service_url(mlflow_uri: str, model_uris) -> Iterator[str]:  # type: ignore[no-untyped-def]
    settings = Settings(mlflow_tracking_uri=mlflow_uri, model_name="co2-serving-validation", poll_seconds=1.0)
    promote(mlflow_uri, settings.model_name, model_uris["knn"])
    with running_service(settings) as url:
        wait_for(lambda: ready_version(url) is not None, 30)
        yield url


CASES = [
    ("negative mass", "/predict", {**GOOD, "mass_kg": -5}, "mass_kg", "greater than or equal to 300"),
    ("unknown fuel type", "/predict", {**GOOD, "fuel_type": "plutonium"}, "fuel_type", "unknown fuel type 'plutonium'"),
    ("missing fuel type", "/predict", {"mass_kg": 1300}, "fuel_type", "Field required"),
    ("wrong type", "/predict", {**GOOD, "mass_kg": "heavy"}, "mass_kg", "valid number"),
    ("unknown field", "/predict", {**GOOD, "colour": "red"}, "colour", "Extra inputs are not permitted"),
    ("power too high", "/predict", {**GOOD, "engine_power_kw": 5000}, "engine_power_kw", "less than or equal to 1500"),
    ("bad fuel mode", "/predict", {**GOOD, "fuel_mode": "X"}, "fuel_mode", "should match pattern"),
    ("no cars", "/predict/batch", {"cars": []}, "cars", "at least 1 item"),
    ("too many cars", "/predict/batch", {"cars": [GOOD] * 10_001}, "cars", "at most 10000 items"),
    ("bad car in a batch", "/predict/batch", {"cars": [GOOD, {**GOOD, "mass_kg": 0}]}, "mass_kg", "equal to 300"),
    ("power too low", "/predict", {**GOOD, "engine_power_kw": 1e-306}, "engine_power_kw", "greater than or equal to 1"),
    ("ambiguous hybrid", "/predict", HYBRID, "fuel_consumption_l_100km", "a hybrid fuel type alone does not tell"),
    ("ambiguous hybrid in a batch", "/predict/batch", {"cars": [GOOD, HYBRID]}, "fuel_consumption_l_100km", "plug-in"),
]


@pytest.mark.parametrize(("case", "route", "body", "field", "rule"), CASES, ids=[c[0] for c in CASES])
def test_bad_json_is_a_422_naming_field_and_rule(
    service_url: str, case: str, route: str, body: dict, field: str, rule: str
) -> None:
    response = httpx.post(f"{service_url}{route}", json=body, timeout=30)
    assert response.status_code == 422, (case, response.text[:300])
    errors = response.json()["detail"]
    assert any(field in map(str, error["loc"]) and rule in error["msg"] for error in errors), errors[:3]


CSV_CASES = [
    ("missing fuel type column", "mass_kg,engine_power_kw\n1300,80\n", "missing column(s) fuel_type"),
    ("unknown column", "fuel_type,colour\nPETROL,red\n", "unknown column(s) colour"),
    ("bad value", "fuel_type,mass_kg\nPETROL,-3\n", "greater than or equal to 300"),
    ("empty file", "", "not a readable CSV"),
]


@pytest.mark.parametrize(("case", "text", "message"), CSV_CASES, ids=[c[0] for c in CSV_CASES])
def test_bad_csv_is_a_422_that_says_what_is_wrong(service_url: str, case: str, text: str, message: str) -> None:
    response = httpx.post(f"{service_url}/predict/batch/csv", files={"file": ("cars.csv", text, "text/csv")})
    assert response.status_code == 422, (case, response.text[:300])
    assert any(message in error["msg"] for error in response.json()["detail"]), response.json()


def test_openapi_documents_every_route_with_examples(service_url: str) -> None:
    spec = httpx.get(f"{service_url}/openapi.json").json()
    assert set(spec["paths"]) == {
        "/predict",
        "/predict/batch",
        "/predict/batch/csv",
        "/model",
        "/health",
        "/ready",
        "/metrics",
        "/registry/events",
    }
    assert spec["components"]["schemas"]["Car"]["examples"]
    assert httpx.get(f"{service_url}/docs").status_code == 200


def test_docs_load_their_assets_from_the_service(service_url: str) -> None:
    """Swagger UI and ReDoc work without network: every script and stylesheet comes from the service."""
    for page in ("/docs", "/redoc"):
        html = httpx.get(f"{service_url}{page}").text
        assets = re.findall(r"<script[^>]*\ssrc=[\"']([^\"']+)", html) + re.findall(
            r"<link[^>]*\shref=[\"']([^\"']+)", html
        )
        assert any(asset.endswith(".js") for asset in assets), (page, assets)
        for asset in assets:
            assert asset.startswith("/") and not asset.startswith("//"), (page, asset)
            assert httpx.get(f"{service_url}{asset}").status_code == 200, (page, asset)


def test_no_server_error_under_fuzzing(service_url: str) -> None:
    """Schemathesis generates requests from the service's own OpenAPI schema: none may get a 5xx."""
    schema = schemathesis.openapi.from_url(f"{service_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 8
    seen: set[int] = set()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case: Case) -> None:
            response = case.call(timeout=30)
            seen.add(response.status_code)
            assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])

        call()
    assert 200 in seen and 422 in seen  # both valid and invalid requests were really sent
