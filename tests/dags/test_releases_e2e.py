"""EEA releases end to end through `dag.test()`: the local discodata server with several years (the real
2021 sample and two generated years), real MLflow, real Airflow DB.

A first run trains on the newest three years; a second finds nothing new and trains nothing; the watcher
emits its Asset event when a final table replaces a provisional one and when a new year appears, and the
retraining run then trains on the new window; a listed table the service does not answer fails the run at
download with production untouched. (The scheduler starting the run on the Asset event is shown in
tests/platform.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest
from mlflow import MlflowClient

from co2.emulator import DiscodataDatabase, EmulatorServer
from co2.settings import Settings
from tests.dags.conftest import run

pytestmark = pytest.mark.e2e

DISCOVERY = ("discover", "anything_new")


def after_discovery(states: dict[str, str]) -> set[str]:
    """The states of every task after discovery (download to register)."""
    return {state for task, state in states.items() if task not in (*DISCOVERY, "__run__")}


@pytest.fixture(scope="module")
def releases(sample_frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    """What `co2 up` serves offline: the real 2021 sample, 2022 final and 2023 provisional generated from it."""
    import threading

    csv = tmp_path_factory.mktemp("releases") / "sample.csv"
    sample_frame.to_csv(csv, index=False)
    server = EmulatorServer(DiscodataDatabase.from_csv([csv], Settings(), generate_years=[2022, 2023]))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def platform(mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return {
        "mlflow_uri": mlflow_uri,
        "data_dir": tmp_path_factory.mktemp("releases-data"),
        "model_name": f"co2-emissions-releases-{os.getpid()}",
    }


def registry(platform: dict[str, Any]) -> MlflowClient:
    return MlflowClient(platform["mlflow_uri"])


def production(platform: dict[str, Any]) -> Any:
    return registry(platform).get_model_version_by_alias(platform["model_name"], "production")


def versions(platform: dict[str, Any]) -> list[str]:
    return sorted(v.version for v in registry(platform).search_model_versions(f"name = '{platform['model_name']}'"))


def publish(server: EmulatorServer, table: str, **extra: Any) -> None:
    httpx.post(f"{server.url}/_emulator/publish", json={"table": table, **extra}, timeout=120).raise_for_status()


def release_events() -> list[dict[str, Any]]:
    """The Asset events of `eea_co2_cars_releases`, oldest first, as the scheduler reads them."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from co2_airflow.assets import EEA_RELEASES

    with create_session() as session:
        query = (
            select(AssetEvent)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == EEA_RELEASES.name)
            .order_by(AssetEvent.id)
        )
        return [{"extra": dict(e.extra or {}), "source_dag_id": e.source_dag_id} for e in session.scalars(query)]


def watch(dagbag, platform: dict[str, Any], server: EmulatorServer) -> str:  # type: ignore[no-untyped-def]
    """One run of the daily watcher: the state of its task."""
    states = run(dagbag.get_dag("co2_eea_releases"), platform, server.url)
    assert states["__run__"] == "success", states
    return states["check_releases"]


@pytest.fixture(scope="module")
def first_run(dag, platform: dict[str, Any], releases: EmulatorServer) -> dict[str, str]:  # type: ignore[no-untyped-def]
    states = run(dag, platform, releases.url)
    assert states["__run__"] == "success", states
    return states


def test_a_first_run_trains_on_the_newest_three_years(first_run: dict[str, str], platform: dict[str, Any]) -> None:
    assert set(first_run.values()) == {"success"}
    version = production(platform)
    tags = version.tags
    assert json.loads(tags["co2.eea_tables"]) == {
        "2021": "co2cars_2021Fv24",
        "2022": "co2cars_2022Fv26",
        "2023": "co2cars_2023Pv27",
    }
    assert tags["co2.eea_tables_from"] == "metadata" and tags["co2.years"] == "2021,2022,2023"
    assert tags["co2.generated_tables"] == "co2cars_2022Fv26,co2cars_2023Pv27"  # marked, the real year is not
    assert len(tags["co2.eea_fingerprint"]) == 16
    # the registered version: its error per year and how much it ages in a year
    assert tags["co2.backtest_year"] == "2023" and float(tags["co2.backtest_mae_g_km"]) > 0
    assert {f"co2.mae_g_km.year.{y}" for y in (2021, 2022, 2023)} <= set(tags)

    # every candidate's run: the window, per-year and per-fuel errors, its backtest
    client = registry(platform)
    run_ids = {v.run_id for v in client.search_model_versions(f"name = '{platform['model_name']}'")}
    experiment = client.get_run(next(iter(run_ids))).info.experiment_id
    candidates = client.search_runs([experiment], "params.years = '2021,2022,2023'")
    by_name = {r.info.run_name: r for r in candidates}
    assert len(by_name) >= 6, sorted(by_name)
    for name, found in by_name.items():
        metrics = found.data.metrics
        assert metrics["backtest_year"] == 2023, name
        assert metrics["backtest_mae_g_km"] > 0 and "backtest_rmse_g_km" in metrics, name
        assert {f"mae_g_km.year.{y}" for y in (2021, 2022, 2023)} <= set(metrics), name
        assert {"mae_g_km.fuel_type.petrol", "mae_g_km.fuel_type.diesel"} <= set(metrics), name
        assert "co2cars_2023Pv27" in found.data.params["eea_tables"], name


def test_a_second_run_with_nothing_new_trains_nothing(
    first_run: dict[str, str],
    dag,  # type: ignore[no-untyped-def]
    platform: dict[str, Any],
    releases: EmulatorServer,
) -> None:
    before, snapshots = versions(platform), set((platform["data_dir"] / "raw").glob("*"))
    states = run(dag, platform, releases.url)
    assert states["__run__"] == "success", states  # a healthy run, not a failure
    assert states["discover"] == states["anything_new"] == "success"
    assert after_discovery(states) == {"skipped"}
    assert versions(platform) == before
    assert set((platform["data_dir"] / "raw").glob("*")) == snapshots  # nothing downloaded


def test_the_watcher_emits_only_when_a_table_is_new(dagbag, platform: dict[str, Any], releases: EmulatorServer) -> None:  # type: ignore[no-untyped-def]
    before = len(release_events())
    assert watch(dagbag, platform, releases) == "success"  # its first look: everything is new to it
    events = release_events()
    assert len(events) == before + 1 and events[-1]["source_dag_id"] == "co2_eea_releases"
    assert events[-1]["extra"]["newest"]["2023"] == "co2cars_2023Pv27"
    assert watch(dagbag, platform, releases) == "skipped"  # nothing changed: no event
    assert len(release_events()) == before + 1


@pytest.mark.parametrize(
    ("table", "window"),
    [
        # the final table of 2023 replaces its provisional one
        ("co2cars_2023Fv28", {"2021": "co2cars_2021Fv24", "2022": "co2cars_2022Fv26", "2023": "co2cars_2023Fv28"}),
        # a new year appears, provisional: the window moves on
        ("co2cars_2024Pv29", {"2022": "co2cars_2022Fv26", "2023": "co2cars_2023Fv28", "2024": "co2cars_2024Pv29"}),
    ],
)
def test_a_release_is_seen_and_the_retraining_run_trains_on_the_new_window(
    first_run: dict[str, str],
    dagbag,  # type: ignore[no-untyped-def]
    dag,  # type: ignore[no-untyped-def]
    platform: dict[str, Any],
    releases: EmulatorServer,
    table: str,
    window: dict[str, str],
) -> None:
    watch(dagbag, platform, releases)  # whatever it had not seen yet
    events = len(release_events())
    publish(releases, table)
    assert watch(dagbag, platform, releases) == "success"
    (event,) = release_events()[events:]
    assert event["extra"]["new"] == [table]

    before = versions(platform)
    states = run(dag, platform, releases.url)  # the run the Asset event starts
    assert states["__run__"] == "success", states
    assert after_discovery(states) == {"success"}
    (new,) = sorted(set(versions(platform)) - set(before))
    tags = registry(platform).get_model_version(platform["model_name"], new).tags
    assert json.loads(tags["co2.eea_tables"]) == window
    assert tags["co2.backtest_year"] == max(window)


def test_a_listed_table_the_service_does_not_answer_fails_at_download(
    capfd: pytest.CaptureFixture[str],
    first_run: dict[str, str],
    dag,  # type: ignore[no-untyped-def]
    platform: dict[str, Any],
    releases: EmulatorServer,
) -> None:
    version = production(platform).version
    publish(releases, "co2cars_2025Pv31", listed_only=True)  # listed, but answers errorcode 10003
    raw = platform["data_dir"] / "raw"
    before = {p: p.read_bytes() for p in raw.glob("*/snapshot.parquet")}
    states = run(dag, platform, releases.url)
    assert states["__run__"] == "failed"
    assert states["discover"] == "success" and states["download"] == "failed"
    assert states["register"] == "upstream_failed"
    assert production(platform).version == version
    assert {p: p.read_bytes() for p in raw.glob("*/snapshot.parquet")} == before
    told = capfd.readouterr()  # the task's log, as `dag.test()` prints it
    assert "Invalid object name 'co2cars_2025Pv31'" in told.out + told.err
