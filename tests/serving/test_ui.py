"""The prediction page (ui/) with Streamlit's own testing API, against the real prediction service.

The service runs under uvicorn with API keys, on a model trained on the real sample (the session's, see
conftest.py) and promoted in the session's MLflow; the page calls it over HTTP as it does in production,
holding the key server-side. Here, beside the service's own tests, the page shares that setup.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from mlflow import MlflowClient
from streamlit.testing.v1 import AppTest

from co2.local import free_port
from co2.settings import Settings, get_settings
from co2_model.inputs import EXAMPLE_CAR
from tests.serving.conftest import promote, ready_version, running_service, wait_for
from ui import APP

API_KEY = f"page-key-{uuid.uuid4().hex}"
TAGS = {
    "co2.mae_g_km": "3.1",
    "co2.rmse_g_km": "6.2",
    "co2.r2": "0.987",
    "co2.mae_g_km.year.2021": "3.1",
    "co2.years": "2021",
    "co2.source_url": "http://user:secret@127.0.0.1:8765",
    "co2.candidate": "random_forest_with_make",
    "co2.raw_sha256": "ab" * 32,
}
# EEA column names, as the EEA publishes them; row 3 is too light to be a car, row 5 burns no known fuel
CARS_CSV = (
    "Mk,Ft,M (kg),Ec (cm3),Ep (KW),Fc\n"
    "VW,PETROL,1280,999,81,5.3\n"
    "SKODA,DIESEL,1500,1968,110,4.9\n"
    "FIAT,PETROL,50,1200,51,5.9\n"
    "TOYOTA,PETROL/ELECTRIC,1400,1798,72,4.5\n"
    "STANLEY,STEAM,1500,,,\n"
)


@dataclass(frozen=True)
class Served:
    url: str
    settings: Settings
    version: str
    run_id: str


@pytest.fixture(scope="module")
def served(mlflow_uri: str, model_uris: dict[str, str]) -> Iterator[Served]:
    """The service with API keys, serving the session's random forest as the production version."""
    settings = Settings(
        mlflow_tracking_uri=mlflow_uri,
        model_name=f"co2-page-{uuid.uuid4().hex[:8]}",
        poll_seconds=1.0,
        api_keys=[API_KEY],
    )
    version = promote(mlflow_uri, settings.model_name, model_uris["random_forest"], tags=TAGS)
    run_id = MlflowClient(mlflow_uri, registry_uri=mlflow_uri).get_model_version(settings.model_name, version).run_id
    with running_service(settings) as url:
        wait_for(lambda: ready_version(url) == version, 120)
        yield Served(url, settings, version, run_id)


@pytest.fixture
def page_env(served: Served, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> Served:
    """Where the page finds the service; its key is the first of CO2_API_KEYS, as in the compose stack."""
    monkeypatch.setenv("CO2_UI_API_URL", served.url)
    monkeypatch.setenv("CO2_API_KEYS", f'["{API_KEY}", "another-key"]')
    monkeypatch.setenv("CO2_UI_MLFLOW_URL", mlflow_uri)
    monkeypatch.delenv("CO2_UI_API_KEY", raising=False)
    return served


def page() -> AppTest:
    """The page as a browser's first visit runs it, with the settings of the environment as it is now."""
    get_settings.cache_clear()
    return AppTest.from_file(str(APP), default_timeout=60).run()


def shown_text(app: AppTest) -> str:
    """Everything the page shows, as text (the element tree's values and labels)."""
    return repr(app._tree)


def api(served: Served, path: str, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{served.url}{path}", headers={"X-API-Key": API_KEY}, timeout=30, **kwargs)  # type: ignore[arg-type]


def test_one_car_answers_with_its_version_and_place_among_the_training_cars(page_env: Served) -> None:
    app = page()
    assert not app.exception and not app.error, [e.value for e in app.error]
    app.number_input(key="car.mass_kg").set_value(1500.0)
    app.selectbox(key="car.fuel_type").set_value("diesel")
    app.button(key="car.predict").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]

    sent = {**EXAMPLE_CAR, "fuel_type": "diesel", "mass_kg": 1500.0}
    expected = api(page_env, "/predict", json=sent).json()
    assert app.metric[0].value == f"{expected['co2_wltp_g_km']:.1f} g/km"
    captions = " ".join(caption.value for caption in app.caption)
    assert f"version {page_env.version}" in captions and "fuel consumption" in captions.lower()
    interval = f"between **{expected['co2_lower_g_km']:.1f}** and **{expected['co2_upper_g_km']:.1f} g/km**"
    assert any(interval in markdown.value for markdown in app.markdown)
    place = next(markdown.value for markdown in app.markdown if markdown.value.startswith("Among the"))
    assert "diesel cars registered in 2021 that the model was trained on" in place, place
    assert "% emit less than this car" in place and "% more" in place
    (chart,) = app.get("vega_lite_chart")  # the diesel cars' histogram, this car marked
    titles = {layer["encoding"]["x"].get("title") for layer in json.loads(chart.proto.spec)["layer"]}
    assert "WLTP CO₂, g/km" in titles
    assert f"this car: {expected['co2_wltp_g_km']:.1f} g/km" in str(chart.proto)  # the mark's label, in its data
    assert API_KEY not in shown_text(app)  # the key stays on the server


def test_a_csv_with_bad_rows_answers_the_others_and_says_what_is_wrong(page_env: Served) -> None:
    app = page()
    app.file_uploader(key="csv.file").set_value(("cars.csv", CARS_CSV.encode(), "text/csv")).run()
    assert not app.exception, app.exception

    problems = app.error[0].value
    assert "row 3: M (kg) 50 is below the minimum 300 kg" in problems, problems
    assert "row 5: Ft STEAM is not an EEA fuel type" in problems, problems
    assert "3 of 5 cars answered by model version" in app.success[0].value
    table = app.dataframe[0].value
    assert list(table["Mk"]) == ["VW", "SKODA", "FIAT", "TOYOTA", "STANLEY"]  # as uploaded, in order
    good = "".join(line + "\n" for i, line in enumerate(CARS_CSV.splitlines()) if i in (0, 1, 2, 4))
    expected = api(page_env, "/predict/batch/csv", files={"file": ("good.csv", good.encode(), "text/csv")}).json()
    answered = table.loc[[0, 1, 3], "co2_wltp_g_km"].astype(float).tolist()
    assert answered == [p["co2_wltp_g_km"] for p in expected["predictions"]]
    assert table.loc[[2, 4], "co2_wltp_g_km"].isna().all()
    assert table.loc[2, "problem"] == "M (kg) 50 is below the minimum 300 kg"
    assert app.get("download_button")[-1].proto.label == "Download the answers (CSV)"


def test_the_model_view_shows_version_metrics_window_and_a_link_to_the_run(page_env: Served, mlflow_uri: str) -> None:
    app = page()
    assert not app.exception and not app.error
    assert any(f"version {page_env.version}" in header.value for header in app.subheader)
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["Mean absolute error"] == "3.1 g/km" and metrics["R²"] == "0.987"
    window = next(frame.value for frame in app.dataframe if "what" in frame.value.columns)
    facts = dict(zip(window["what"], window["value"], strict=True))
    assert facts["registration years"] == "2021" and facts["candidate"] == "random_forest_with_make"
    assert "secret" not in facts["source"]  # the service gives URLs without credentials
    (link,) = app.get("link_button")
    assert link.proto.url == f"{mlflow_uri}/#/runs/{page_env.run_id}"
    by_fuel = next(frame.value for frame in app.dataframe if "fuel type" in frame.value.columns)
    assert {"petrol", "diesel"} <= set(by_fuel["fuel type"])
    assert (by_fuel["10 %"] <= by_fuel["median"]).all() and (by_fuel["median"] <= by_fuel["90 %"]).all()


def test_the_page_says_plainly_when_the_service_cannot_answer(
    page_env: Served, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # nothing listens there: connection refused
    nowhere = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("CO2_UI_API_URL", nowhere)
    app = page()
    assert not app.exception and not app.tabs
    assert app.error[0].value.startswith(f"The prediction service at {nowhere} does not answer.")

    # a service with no production model yet: /ready says 503 and why
    empty = Settings(mlflow_tracking_uri=mlflow_uri, model_name=f"co2-page-none-{uuid.uuid4().hex[:8]}")
    with running_service(empty) as url:
        monkeypatch.setenv("CO2_UI_API_URL", url)
        app = page()
    assert not app.exception and not app.tabs
    assert "The prediction service is not ready: no production model loaded yet." in app.error[0].value

    # a key the service does not accept
    monkeypatch.setenv("CO2_UI_API_URL", page_env.url)
    monkeypatch.setenv("CO2_UI_API_KEY", "not-a-key")
    app = page()
    assert not app.exception and "refused this page's API key (403)" in app.error[0].value

    # the service goes away while the page is open: the next click gets a sentence, not a traceback
    monkeypatch.delenv("CO2_UI_API_KEY")
    with running_service(page_env.settings) as url:
        monkeypatch.setenv("CO2_UI_API_URL", url)
        wait_for(lambda: ready_version(url) == page_env.version, 120)
        app = page()
        assert not app.error and app.tabs
    app.button(key="car.predict").click().run()
    assert not app.exception
    assert app.error[0].value.startswith(f"The prediction service at {url} does not answer.")
