"""The local discodata service answers the pipeline's T-SQL with the real service's shapes."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from co2.discodata import qualified
from co2.emulator import (
    ERROR_INVALID_OBJECT,
    ERROR_REFUSED,
    ERROR_TIMEOUT,
    MAX_ANSWER_BYTES,
    DiscodataDatabase,
    EmulatorServer,
    translate,
)
from co2.settings import Settings

pytestmark = pytest.mark.server  # the local discodata server, on a loopback port

TABLE = qualified("co2cars_2021Fv24")


def sql(url: str, query: str, page: int = 1, size: int = 100) -> dict:
    response = httpx.get(f"{url}/sql", params={"query": query, "p": page, "nrOfHits": size})
    assert response.status_code == 200
    return response.json()


def test_translate_maps_qualified_names_and_top() -> None:
    translated, top = translate("SELECT TOP 5 [M (kg)] FROM [CO2Emission].[latest].[co2cars_2021Fv24]")
    assert translated == "SELECT [M (kg)] FROM [co2cars_2021Fv24]"
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


@pytest.mark.parametrize("query", ["DROP TABLE [co2cars_2021Fv24]", "WITH x AS (SELECT 1) SELECT * FROM x"])
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


# --- read-only by construction, bounded, one statement, its own names only -----------------------
MILLION = 1_000_000
BIG_TABLE = "co2cars_2021Fv24"


@pytest.fixture(scope="module")
def million_rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with a million rows in the 2021 table, built by SQLite itself in about two seconds."""
    path = tmp_path_factory.mktemp("million") / "million.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute(
        f'CREATE TABLE {BIG_TABLE} ("ID" INTEGER, "Mk" TEXT, "Ft" TEXT, "M (kg)" REAL, "Ewltp (g/km)" REAL, "Fc" REAL)'
    )
    conn.execute(
        f"INSERT INTO {BIG_TABLE} WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {MILLION}) "
        "SELECT i, 'MAKE' || (i % 50), CASE i % 3 WHEN 0 THEN 'PETROL' WHEN 1 THEN 'DIESEL' ELSE 'ELECTRIC' END, "
        "1000 + i % 900, 100 + i % 80, 4 + (i % 40) / 10.0 FROM s"
    )
    conn.commit()
    conn.close()
    return path


@contextmanager
def serving(db: DiscodataDatabase, **server: Any) -> Iterator[EmulatorServer]:
    emulator = EmulatorServer(db, "127.0.0.1", 0, **server)
    threading.Thread(target=emulator.serve_forever, daemon=True).start()
    try:
        yield emulator
    finally:
        emulator.shutdown()
        emulator.server_close()


@pytest.fixture(scope="module")
def big_url(million_rows: Path) -> Iterator[str]:
    """The million-row file served read-only, with a short time limit."""
    with serving(DiscodataDatabase(million_rows, query_timeout_seconds=2.0)) as emulator:
        yield emulator.url


@pytest.fixture(scope="module")
def private_url(sample_frame: pd.DataFrame) -> Iterator[str]:
    """The sample on an emulator of this module's own, for requests that try to change its data."""
    db = DiscodataDatabase()
    db.append_by_year(sample_frame, Settings())
    with serving(db) as emulator:
        yield emulator.url


def get(url: str, query: str, page: int = 1, size: int = 100, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"{url}/sql", params={"query": query, "p": page, "nrOfHits": size}, timeout=60, **kwargs)


def test_top_1_of_a_million_rows_stops_at_the_first_row(big_url: str) -> None:
    get(big_url, f"SELECT TOP 1 [ID] FROM {qualified(BIG_TABLE)}")  # connection and imports warmed
    tracemalloc.start()
    try:
        started = time.perf_counter()
        response = get(big_url, f"SELECT TOP 1 * FROM {qualified(BIG_TABLE)}", size=1)
        seconds = time.perf_counter() - started
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert response.json()["results"] == [
        {"ID": 1, "Mk": "MAKE1", "Ft": "DIESEL", "M (kg)": 1001.0, "Ewltp (g/km)": 101.0, "Fc": 4.1}
    ]
    assert seconds < 0.5
    assert peak_bytes < 5 * 2**20


def test_top_n_with_order_by_stops_early_and_pages(big_url: str) -> None:
    table = qualified(BIG_TABLE)
    started = time.perf_counter()
    last = get(big_url, f"SELECT TOP 3 [ID] FROM {table} ORDER BY [ID] DESC", size=10).json()["results"]
    seconds = time.perf_counter() - started
    assert [r["ID"] for r in last] == [MILLION, MILLION - 1, MILLION - 2]
    assert seconds < 1.5  # one pass keeping the top 3, not a sorted million-row list
    paged = [get(big_url, f"SELECT TOP 5 [ID] FROM {table} ORDER BY [ID]", page=p, size=2) for p in (1, 2, 3, 4)]
    assert [[r["ID"] for r in page.json()["results"]] for page in paged] == [[1, 2], [3, 4], [5], []]


def test_paging_holds_one_page_in_memory_not_the_whole_answer(big_url: str) -> None:
    query = f"SELECT [ID], [Mk] FROM {qualified(BIG_TABLE)} ORDER BY [ID]"
    tracemalloc.start()
    try:
        pages = [get(big_url, query, page=p, size=1000).json()["results"] for p in (1, 2, 5)]
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [[r["ID"] for r in page] for page in pages] == [
        list(range(1, 1001)),
        list(range(1001, 2001)),
        list(range(4001, 5001)),
    ]
    assert peak_bytes < 10 * 2**20  # a million rows as Python objects are hundreds of MB


def test_a_slow_query_is_stopped_and_does_not_hold_up_the_others(big_url: str) -> None:
    slow: dict[str, Any] = {}

    def cross_join() -> None:
        started = time.perf_counter()
        slow["body"] = get(
            big_url, f"SELECT COUNT(*) AS n FROM {qualified(BIG_TABLE)} a, {qualified(BIG_TABLE)} b"
        ).json()
        slow["seconds"] = time.perf_counter() - started

    thread = threading.Thread(target=cross_join)
    thread.start()
    time.sleep(0.5)
    started = time.perf_counter()
    quick = get(big_url, f"SELECT TOP 1 [ID] FROM {qualified(BIG_TABLE)}").json()
    quick_seconds = time.perf_counter() - started
    thread.join(30)
    assert quick == {"results": [{"ID": 1}]} and quick_seconds < 1.0
    assert slow["body"]["errors"][0]["errorcode"] == ERROR_TIMEOUT
    assert "CO2_EMULATOR_QUERY_TIMEOUT_SECONDS" in slow["body"]["errors"][0]["error"]
    assert slow["seconds"] < 5.0  # the limit is 2 s


def test_a_huge_page_is_refused_within_bounded_memory(emulator_url: str) -> None:
    """A cross join of the sample with itself, 100,000 rows of 76 columns asked at once."""
    tracemalloc.start()
    try:
        response = get(emulator_url, f"SELECT * FROM {TABLE} a, {TABLE} b", size=100_000)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    errors = response.json()["errors"]
    assert (response.status_code, errors[0]["errorcode"]) in {(400, 400), (200, ERROR_TIMEOUT)}, errors
    assert peak_bytes < 2.5 * MAX_ANSWER_BYTES


def count_rows(url: str) -> int:
    return int(get(url, f"SELECT COUNT(*) AS n FROM {TABLE}").json()["results"][0]["n"])


@pytest.mark.parametrize(
    "query",
    [
        "REPLACE INTO [co2cars_2021Fv24] ([ID]) VALUES (-1)",
        "INSERT INTO [co2cars_2021Fv24] ([ID]) SELECT -1",
        "/**/DELETE FROM [co2cars_2021Fv24]",
        "COMMIT",
        "PRAGMA query_only=OFF",
        "ATTACH 'file:other.db' AS other",
        "/**/WITH x AS (SELECT 1 AS a) SELECT * FROM x",
        # passes for a SELECT: the authorizer refuses the recursion
        "SELECT * FROM (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) SELECT i FROM c)",
    ],
)
def test_nothing_but_reading_is_allowed(private_url: str, query: str) -> None:
    before = count_rows(private_url)
    response = get(private_url, query)
    assert response.status_code == 200
    assert response.json()["errors"][0]["errorcode"] == ERROR_REFUSED
    get(private_url, "COMMIT")
    assert count_rows(private_url) == before


def test_a_write_followed_by_commit_is_one_refused_request(private_url: str) -> None:
    before = count_rows(private_url)
    response = get(private_url, "REPLACE INTO [co2cars_2021Fv24] ([ID]) VALUES (-1); COMMIT")
    assert response.status_code == 400
    assert "one statement per query" in response.json()["errors"][0]["error"]
    assert count_rows(private_url) == before


def test_vacuum_into_writes_no_file(private_url: str, tmp_path: Path) -> None:
    target = tmp_path / "copy.db"
    for query in (f"VACUUM INTO '{target}'", f"/* a comment */ VACUUM INTO '{target}'"):
        assert get(private_url, query).json()["errors"][0]["errorcode"] == ERROR_REFUSED
    assert not target.exists()


@pytest.mark.parametrize(
    "query",
    [
        f"SELECT TOP 1 [ID] FROM {TABLE};",
        f"SELECT TOP 1 [ID] FROM {TABLE}; -- the end",
        f"SELECT TOP 1 [ID] FROM {TABLE} WHERE [Mk] <> 'a;b' -- ; DROP TABLE x",
    ],
)
def test_semicolons_in_comments_strings_or_at_the_end_are_one_statement(emulator_url: str, query: str) -> None:
    assert len(sql(emulator_url, query)["results"]) == 1


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("SELECT 1 AS a; SELECT 2 AS b", "one statement per query"),
        ("SELECT x'00ff' AS b", "BLOB"),
    ],
)
def test_bad_queries_get_400_with_the_reason(emulator_url: str, query: str, reason: str) -> None:
    response = get(emulator_url, query)
    assert response.status_code == 400
    assert reason in response.json()["errors"][0]["error"]


def test_requests_for_another_host_name_are_refused(emulator: EmulatorServer) -> None:
    port = emulator.server_address[1]
    query = f"SELECT TOP 1 [ID] FROM {TABLE}"
    for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.attacker.example"):
        response = get(emulator.url, query, headers={"Host": host})
        assert response.status_code == 403, host
        assert "CO2_EMULATOR_ALLOWED_HOSTS" in response.json()["errors"][0]["error"]
    forged = httpx.post(f"{emulator.url}/_emulator/faults", json={"mode": "error500"}, headers={"Host": "evil"})
    assert forged.status_code == 403 and emulator.faults.mode == "none"
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "LOCALHOST"):
        assert get(emulator.url, query, headers={"Host": host}).status_code == 200, host


def test_configured_host_names_are_answered(sample_frame: pd.DataFrame) -> None:
    db = DiscodataDatabase()
    db.append_by_year(sample_frame.head(10), Settings())
    with serving(db, allowed_hosts=["discodata-emulator"]) as emulator:
        answer = httpx.get(f"{emulator.url}/health", headers={"Host": "discodata-emulator:8765"})
        assert answer.status_code == 200
        assert httpx.get(f"{emulator.url}/health", headers={"Host": "other:8765"}).status_code == 403


def raw_post(server: EmulatorServer, head: bytes, body: bytes = b"") -> bytes:
    """One POST on a raw socket: the status line and body of the answer, or b'' if the server hung up."""
    with socket.create_connection(server.server_address[:2], timeout=5) as conn:
        conn.sendall(b"POST /_emulator/faults HTTP/1.1\r\nHost: 127.0.0.1\r\n" + head + b"\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer


@pytest.mark.parametrize(
    ("head", "body"),
    [
        (b"Content-Length: 2\r\n", b"[]"),
        (b"Content-Length: 9\r\n", b"not json!"),
        (b"Content-Length: abc\r\n", b""),
        (b"Content-Length: -5\r\n", b""),
        (b"Content-Length: 1000000000000\r\n", b"{}"),
        (b"Content-Length: 23\r\n", b'{"delay_seconds": -1.0}'),
        (b"Content-Length: 13\r\n", b'{"count": -1}'),
    ],
)
def test_bad_fault_requests_get_400_json(emulator: EmulatorServer, head: bytes, body: bytes) -> None:
    answer = raw_post(emulator, head, body)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["errors"][0]["errorcode"] == 400
    assert emulator.faults.mode == "none"


def test_an_idle_connection_is_closed() -> None:
    with (
        serving(DiscodataDatabase(), idle_timeout_seconds=0.5) as emulator,
        socket.create_connection(emulator.server_address[:2], timeout=5) as conn,
    ):
        started = time.perf_counter()
        assert conn.recv(1) == b""  # the server hung up on a client that says nothing
        assert time.perf_counter() - started < 3


# --- releases: the metadata listing, several years, publishing while running ----------------------
@pytest.fixture(scope="module")
def offline_years(sample_frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    """The offline platform's server: the real 2021 sample and two generated years, the newest provisional."""
    csv = tmp_path_factory.mktemp("offline") / "sample.csv"
    sample_frame.to_csv(csv, index=False)
    db = DiscodataDatabase.from_csv([csv], Settings(), generate_years=[2022, 2023])
    with serving(db) as emulator:
        yield emulator


def listed(url: str, path: str = "/md/") -> dict[str, dict[str, Any]]:
    answer = httpx.get(f"{url}{path}", timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    (database,) = answer.json()
    assert database["Name"] == "CO2Emission"
    (schema,) = database["Schemas"]
    assert schema["Name"] == "latest"
    return {table["name"]: table for table in schema["Tables"]}


def test_the_listing_has_the_real_shape_and_marks_generated_tables(offline_years: EmulatorServer) -> None:
    tables = listed(offline_years.url)
    assert listed(offline_years.url, "/md") == tables
    assert sorted(tables) == ["co2cars_2021Fv24", "co2cars_2022Fv26", "co2cars_2023Pv27"]
    real = tables["co2cars_2021Fv24"]
    assert "description" not in real  # the real sample is not marked
    assert {"M (kg)", "Ewltp (g/km)", "Ft", "Year"} <= {c["name"] for c in real["Columns"]}
    assert {c["table"] for c in real["Columns"]} == {"co2cars_2021Fv24"}
    assert real["datalakeUrl"].startswith(offline_years.url)
    for name in ("co2cars_2022Fv26", "co2cars_2023Pv27"):
        assert tables[name]["description"].startswith("GENERATED") and "not EEA data" in tables[name]["description"]


def year_figures(url: str, table: str) -> dict[str, float]:
    (row,) = sql(
        url,
        "SELECT COUNT(*) AS n, AVG([M (kg)]) AS mass, AVG([Ewltp (g/km)]) AS co2, "
        "SUM(CASE WHEN UPPER([Ft]) = 'ELECTRIC' THEN 1 ELSE 0 END) AS bev, "
        "SUM(CASE WHEN [Fm] = 'P' THEN 1 ELSE 0 END) AS phev, "
        "SUM(CASE WHEN [Ft] = LOWER([Ft]) THEN 1 ELSE 0 END) AS lower_case, MIN([Year]) AS year, "
        f"MAX([Status]) AS status FROM {qualified(table)}",
    )["results"]
    return row


def test_generated_years_drift_as_documented(offline_years: EmulatorServer) -> None:
    real = year_figures(offline_years.url, "co2cars_2021Fv24")
    y2022 = year_figures(offline_years.url, "co2cars_2022Fv26")
    y2023 = year_figures(offline_years.url, "co2cars_2023Pv27")
    assert (y2022["year"], y2022["status"], y2023["year"], y2023["status"]) == (2022, "F", 2023, "P")
    assert real["bev"] / real["n"] < y2022["bev"] / y2022["n"] < y2023["bev"] / y2023["n"]  # more electric
    assert y2023["bev"] / y2023["n"] - real["bev"] / real["n"] == pytest.approx(0.05, abs=0.005)
    assert y2023["phev"] / y2023["n"] >= real["phev"] / real["n"]
    assert real["mass"] < y2022["mass"] < y2023["mass"]  # heavier
    assert real["co2"] > y2022["co2"] > y2023["co2"]  # lower average CO2
    assert real["lower_case"] == y2023["lower_case"] == 0  # lower-case fuel types only from 2025


def test_publishing_a_new_year_and_a_final_table_while_running(offline_years: EmulatorServer) -> None:
    url = offline_years.url
    new_year = httpx.post(f"{url}/_emulator/publish", json={"table": "co2cars_2025Pv31"}, timeout=60)
    assert new_year.status_code == 200 and new_year.json()["rows"] == 4000
    final = httpx.post(f"{url}/_emulator/publish", json={"table": "co2cars_2023Fv28"}, timeout=60)
    assert final.status_code == 200
    tables = listed(url)
    assert {"co2cars_2023Pv27", "co2cars_2023Fv28", "co2cars_2025Pv31"} <= set(tables)  # both 2023 stay listed
    revised, provisional = year_figures(url, "co2cars_2023Fv28"), year_figures(url, "co2cars_2023Pv27")
    assert revised["status"] == "F" and revised["year"] == 2023
    assert provisional["n"] < revised["n"] <= provisional["n"] * 1.05  # late registrations added
    y2025 = year_figures(url, "co2cars_2025Pv31")
    assert y2025["lower_case"] == y2025["n"] and y2025["status"] == "P"  # 2025 spells fuel types in lower case

    # a listed table the service does not answer, as discodata sometimes lists
    phantom = httpx.post(f"{url}/_emulator/publish", json={"table": "co2cars_2026Pv33", "listed_only": True})
    assert phantom.status_code == 200 and "co2cars_2026Pv33" in listed(url)
    assert sql(url, f"SELECT TOP 1 * FROM {qualified('co2cars_2026Pv33')}")["errors"][0]["errorcode"] == 10003


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"table": "co2cars_2021Fv24"}, "published already"),
        ({"table": "co2cars_2023Pv27"}, "published already"),
        ({"table": "vans_2024Pv1"}, "not a yearly table name"),
        ({"table": "co2cars_2019Pv1"}, "no rows to publish"),
        ({"table": 2024}, "JSON object such as"),
        ({"table": "co2cars_2024Pv29", "listed_only": "yes"}, "listed_only must be true or false"),
        ([1, 2], "JSON object such as"),
    ],
)
def test_a_bad_publish_is_refused_and_changes_nothing(offline_years: EmulatorServer, body: Any, says: str) -> None:
    before = listed(offline_years.url)
    answer = httpx.post(f"{offline_years.url}/_emulator/publish", json=body, timeout=30)
    assert answer.status_code == 400 and says in answer.json()["errors"][0]["error"]
    assert listed(offline_years.url) == before


def test_a_database_file_is_not_published_to(big_url: str) -> None:
    answer = httpx.post(f"{big_url}/_emulator/publish", json={"table": "co2cars_2024Pv29"}, timeout=30)
    assert answer.status_code == 400 and "read-only" in answer.json()["errors"][0]["error"]
    assert "co2cars_2024Pv29" not in listed(big_url)


def test_a_restarted_server_lists_what_it_published(sample_frame: pd.DataFrame, tmp_path: Path) -> None:
    csv = tmp_path / "sample.csv"
    sample_frame.to_csv(csv, index=False)
    journal = tmp_path / "published.jsonl"
    first = DiscodataDatabase.from_csv([csv], Settings(), generate_years=[2022])
    first.replay(journal)  # nothing yet
    first.publish("co2cars_2023Pv27")
    first.publish("co2cars_2023Fv28")
    first.publish("co2cars_2024Pv29", listed_only=True)
    with pytest.raises(ValueError, match="published already"):
        first.publish("co2cars_2023Pv27")  # refused: not recorded

    again = DiscodataDatabase.from_csv([csv], Settings(), generate_years=[2022])
    again.replay(journal)
    assert again.listing() == first.listing()
    for table in ("co2cars_2023Pv27", "co2cars_2023Fv28"):  # the same rows: generated with the same seeds
        read = f"SELECT * FROM [{table}] ORDER BY [ID]"
        assert again._read_one(read) == first._read_one(read)
    assert len(journal.read_text().splitlines()) == 3


def test_the_downloads_aggregation_reads_an_index_instead_of_sorting_every_row(
    sample_frame: pd.DataFrame, tmp_path: Path
) -> None:
    from co2.emulator import index_for_download
    from co2.pipeline.download import aggregation_query, columns_to_request

    connection = sqlite3.connect(tmp_path / "discodata.sqlite")
    sample_frame.to_sql("co2cars_2021Fv24", connection, index=False)
    sample_frame.drop(columns=["Mk"]).to_sql("no_make", connection, index=False)
    assert index_for_download(connection, "co2cars_2021Fv24")
    assert not index_for_download(connection, "no_make")  # the download refuses that table anyway
    columns = columns_to_request(list(sample_frame.columns), "co2cars_2021Fv24")
    query, _ = translate(aggregation_query("co2cars_2021Fv24", columns))
    plan = " | ".join(str(row[3]) for row in connection.execute(f"EXPLAIN QUERY PLAN {query}"))
    assert "COVERING INDEX" in plan and "TEMP B-TREE" not in plan, plan
    indexed = {
        row[0]: row[1] for row in connection.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index'")
    }
    assert indexed == {"co2cars_2021Fv24__download": "co2cars_2021Fv24"}
