"""The local discodata service answers the pipeline's T-SQL with the real service's shapes."""

from __future__ import annotations

import httpx
import pandas as pd
import pytest

from co2.discodata import qualified
from co2.emulator import ERROR_INVALID_OBJECT, translate

TABLE = qualified("co2cars_2021Pv23")


def sql(url: str, query: str, page: int = 1, size: int = 100) -> dict:
    response = httpx.get(f"{url}/sql", params={"query": query, "p": page, "nrOfHits": size})
    assert response.status_code == 200
    return response.json()


def test_translate_maps_qualified_names_and_top() -> None:
    translated, top = translate("SELECT TOP 5 [M (kg)] FROM [CO2Emission].[latest].[co2cars_2021Pv23]")
    assert translated == "SELECT [M (kg)] FROM [co2cars_2021Pv23]"
    assert top == 5


def test_group_by_count_matches_the_csv(emulator_url: str, sample_frame: pd.DataFrame) -> None:
    body = sql(emulator_url, f"SELECT [Ft], COUNT(*) AS n FROM {TABLE} GROUP BY [Ft] ORDER BY [Ft]")
    got = {row["Ft"]: row["n"] for row in body["results"]}
    assert got == sample_frame["Ft"].value_counts().to_dict()


def test_where_and_distinct_run_for_real(emulator_url: str, sample_frame: pd.DataFrame) -> None:
    body = sql(emulator_url, f"SELECT DISTINCT [Mk] FROM {TABLE} WHERE [Ft] = 'ELECTRIC'", size=1000)
    expected = set(sample_frame.loc[sample_frame["Ft"] == "ELECTRIC", "Mk"])
    assert {row["Mk"] for row in body["results"]} == expected


def test_paging_ends_with_an_empty_list(emulator_url: str, sample_frame: pd.DataFrame) -> None:
    query = f"SELECT [ID] FROM {TABLE} ORDER BY [ID]"
    pages = [sql(emulator_url, query, page=p, size=1500)["results"] for p in (1, 2, 3, 4)]
    assert [len(p) for p in pages] == [1500, 1500, 1000, 0]
    assert [r["ID"] for p in pages for r in p] == sorted(sample_frame["ID"])


def test_missing_values_are_json_null(emulator_url: str) -> None:
    body = sql(emulator_url, f"SELECT TOP 1 [Ec (cm3)] FROM {TABLE} WHERE [Ft] = 'ELECTRIC'")
    assert body["results"] == [{"Ec (cm3)": None}]


def test_unknown_table_is_error_10003(emulator_url: str) -> None:
    body = sql(emulator_url, "SELECT TOP 1 * FROM [CO2Emission].[latest].[co2cars_1999]")
    assert body["errors"][0]["errorcode"] == ERROR_INVALID_OBJECT
    assert "co2cars_1999" in body["errors"][0]["error"]


@pytest.mark.parametrize("query", ["DROP TABLE [co2cars_2021Pv23]", "WITH x AS (SELECT 1) SELECT * FROM x"])
def test_refuses_what_discodata_refuses(emulator_url: str, query: str) -> None:
    assert "errors" in sql(emulator_url, query)


def test_injected_500s_then_recovery(emulator_url: str) -> None:
    httpx.post(f"{emulator_url}/_emulator/faults", json={"mode": "error500", "count": 2}).raise_for_status()
    statuses = [
        httpx.get(f"{emulator_url}/sql", params={"query": f"SELECT TOP 1 [ID] FROM {TABLE}"}).status_code
        for _ in range(3)
    ]
    assert statuses == [500, 500, 200]


def test_injected_dropped_connection(emulator_url: str) -> None:
    httpx.post(f"{emulator_url}/_emulator/faults", json={"mode": "drop", "count": 1}).raise_for_status()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{emulator_url}/sql", params={"query": f"SELECT TOP 1 [ID] FROM {TABLE}"})


def test_bad_fault_mode_is_refused_with_the_choices(emulator_url: str) -> None:
    response = httpx.post(f"{emulator_url}/_emulator/faults", json={"mode": "explode"})
    assert response.status_code == 400
    assert "error500" in response.json()["errors"][0]["error"]
