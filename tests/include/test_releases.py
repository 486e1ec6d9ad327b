"""Which EEA tables a run takes: the listing's rules, the window, the fallback, and what the watcher calls new."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from co2.discodata import DiscodataClient, DiscodataError
from co2.local import free_port
from co2.releases import (
    check_releases,
    discover,
    newest_per_year,
    parse_table,
    releases_in,
    window,
)
from co2.settings import DEFAULT_EEA_TABLES, Settings


def listing(*tables: str, key: str = "Name", database: str = "CO2Emission", schema: str = "latest") -> list[Any]:
    """A metadata listing in the real service's shape, every key spelled in the case of `key`."""

    def k(word: str) -> str:
        return word.upper() if key.isupper() else word.capitalize() if key[0].isupper() else word

    return [
        {k("name"): "Other", k("schemas"): []},
        {
            k("name"): database,
            k("schemas"): [
                {
                    k("name"): schema,
                    k("tables"): [
                        {
                            k("name"): table,
                            k("columns"): [{k("name"): "Ewltp (g/km)", "table": table}],
                            "datalakeUrl": f"https://example.invalid/{table}",
                        }
                        for table in tables
                    ],
                }
            ],
        },
    ]


PUBLISHED_TODAY = (
    "co2cars",
    "co2cars_2020Fv22",
    "co2cars_2021Pv23",
    "co2cars_2021Fv24",
    "co2cars_2022Pv25",
    "co2cars_2022Fv26",
    "co2cars_2023Pv27",
    "co2cars_2023Fv28",
    "co2cars_2024Pv29",
    "co2cars_2024Fv30",
    "co2cars_2025Pv31",
)


def test_final_beats_provisional_and_the_highest_version_wins() -> None:
    releases, other = releases_in(listing(*PUBLISHED_TODAY))
    assert other == ["co2cars"]  # the combined 2010-2021 table is not a yearly release
    newest = {year: r.table for year, r in newest_per_year(releases).items()}
    assert newest == {
        2020: "co2cars_2020Fv22",
        2021: "co2cars_2021Fv24",
        2022: "co2cars_2022Fv26",
        2023: "co2cars_2023Fv28",
        2024: "co2cars_2024Fv30",
        2025: "co2cars_2025Pv31",
    }
    # a provisional table with a higher version than the final one still loses to the final
    releases, _ = releases_in(listing("co2cars_2025Fv32", "co2cars_2025Pv33", "co2cars_2025Pv31"))
    assert newest_per_year(releases)[2025].table == "co2cars_2025Fv32"
    releases, _ = releases_in(listing("co2cars_2026Pv33", "co2cars_2026Pv35", "co2cars_2026Pv34"))
    assert newest_per_year(releases)[2026].table == "co2cars_2026Pv35"


@pytest.mark.parametrize("key", ["name", "Name", "NAME"])
def test_either_key_spelling_is_read(key: str) -> None:
    releases, _ = releases_in(listing("co2cars_2023Fv28", "co2cars_2024Pv29", key=key))
    assert sorted(r.table for r in releases) == ["co2cars_2023Fv28", "co2cars_2024Pv29"]


def test_unknown_tables_other_schemas_and_databases_are_left_out() -> None:
    releases, other = releases_in(
        listing("co2cars_2024Pv29", "vans_2024Pv12", "co2cars_2024", "co2cars_2024Xv30", "co2cars_24Fv1")
    )
    assert [r.table for r in releases] == ["co2cars_2024Pv29"]
    assert sorted(other) == ["co2cars_2024", "co2cars_2024Xv30", "co2cars_24Fv1", "vans_2024Pv12"]
    assert releases_in(listing("co2cars_2024Pv29", schema="archive")) == ([], [])
    assert releases_in(listing("co2cars_2024Pv29", database="CO2Vans")) == ([], [])
    for garbage in (None, {}, "text", [1, "x", None], [{"name": "CO2Emission", "Schemas": "no"}]):
        assert releases_in(garbage) == ([], [])
    assert parse_table("CO2CARS_2024pV29") is not None  # the service's names are not case-sensitive


def test_the_window_is_the_newest_years_with_gaps_kept() -> None:
    available = {2019: "a", 2021: "b", 2022: "c", 2024: "d"}  # 2020 and 2023 missing
    assert window(available, [], 3) == {2021: "b", 2022: "c", 2024: "d"}
    assert window(available, [], 10) == available
    assert window(available, [2019, 2022], 3) == {2019: "a", 2022: "c"}
    with pytest.raises(ValueError, match=r"year\(s\) 2023 .*years available: 2019, 2021, 2022, 2024"):
        window(available, [2022, 2023], 3)


class ListingServer(ThreadingHTTPServer):
    """A discodata stand-in whose /md/ answers `body` and whose /sql counts rows (4,000 per table)."""

    def __init__(self, body: Any, status: int = 200) -> None:
        self.body, self.status, self.requests = body, status, []  # type: ignore[var-annotated]
        super().__init__(("127.0.0.1", 0), _ListingHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ListingHandler(BaseHTTPRequestHandler):
    server: ListingServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        if self.path.startswith("/md"):
            status, payload = self.server.status, self.server.body
        else:
            status, payload = 200, {"results": [{"n": 4000}]}
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[ListingServer] = []

    def start(body: Any, status: int = 200) -> ListingServer:
        server = ListingServer(body, status)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def client(url: str) -> DiscodataClient:
    return DiscodataClient(url, retries=1, backoff_seconds=0.01, timeout_seconds=5)


def test_discovery_takes_the_newest_three_years_of_the_listing(serve: Any) -> None:
    server = serve(listing(*PUBLISHED_TODAY))
    with client(server.url) as c:
        found = discover(Settings(), c)
    assert found.tables_from == "metadata"
    assert found.tables == {2023: "co2cars_2023Fv28", 2024: "co2cars_2024Fv30", 2025: "co2cars_2025Pv31"}
    assert found.rows == {table: 4000 for table in found.tables.values()}
    assert "newest release of each year" in found.note and "co2cars_2025Pv31" in found.note
    assert [p for p in server.requests if p.startswith("/md")] == ["/md/"]
    assert len(found.fingerprint()) == 16
    assert json.loads(json.dumps(found.to_dict()))["fingerprint"] == found.fingerprint()


@pytest.mark.parametrize(
    ("body", "status", "why"),
    [
        (listing("co2cars", "vans_2024Pv12"), 200, "names no CO2Emission.latest"),
        ([], 200, "names no CO2Emission.latest"),
        (b"<html>maintenance</html>", 200, "not JSON"),
        ({"errors": "down"}, 404, "HTTP 404"),
        ({}, 503, "failed 2 times"),
    ],
)
def test_an_unreadable_listing_falls_back_to_the_configured_tables(
    serve: Any, body: Any, status: int, why: str
) -> None:
    server = serve(body, status)
    with client(server.url) as c:
        found = discover(Settings(), c)
    assert found.tables_from == "fallback" and why in found.note and "fell back to the configured tables" in found.note
    newest = sorted(DEFAULT_EEA_TABLES)[-3:]
    assert found.tables == {year: DEFAULT_EEA_TABLES[year] for year in newest}


def test_an_unreachable_service_falls_back_too() -> None:
    with client(f"http://127.0.0.1:{free_port()}") as c:  # nothing listens there
        found = discover(Settings(), c)
    assert found.tables_from == "fallback" and "did not answer" in found.note
    assert set(found.rows.values()) == {None}  # not counted: the download will say why


def test_a_service_failing_through_every_retry_is_not_asked_to_count(serve: Any) -> None:
    server = serve({}, 503)
    with client(server.url) as c:
        found = discover(Settings(), c)
    assert found.tables_from == "fallback" and set(found.rows.values()) == {None}
    assert server.requests and all(p.startswith("/md") for p in server.requests)  # the listing's retries only


def test_tables_named_in_settings_or_params_win_without_reading_the_listing(serve: Any) -> None:
    server = serve(listing(*PUBLISHED_TODAY))
    pinned = Settings(eea_tables={2021: "co2cars_2021Pv23", 2022: "co2cars_2022Pv25"})
    with client(server.url) as c:
        from_settings = discover(pinned, c)
        from_params = discover(pinned, c, tables={2024: "co2cars_2024Pv29"})
        one_year = discover(Settings(), c, years=[2021])
    assert from_settings.tables_from == "settings" and from_settings.tables == pinned.eea_tables
    assert from_params.tables_from == "params" and from_params.tables == {2024: "co2cars_2024Pv29"}
    assert one_year.tables == {2021: "co2cars_2021Fv24"}
    assert [p for p in server.requests if p.startswith("/md")] == ["/md/"]  # only the last one read it


def test_the_watcher_sees_a_new_year_a_new_version_and_a_final_table(serve: Any) -> None:
    first = serve(listing("co2cars_2023Pv27", "co2cars_2024Pv29"))
    with client(first.url) as c:
        seen = check_releases(c, None)
    assert seen.changed and seen.new == ["co2cars_2023Pv27", "co2cars_2024Pv29"]
    last = {str(y): t for y, t in seen.newest.items()}
    assert seen.to_extra()["newest"] == last

    for tables, new in (
        (("co2cars_2023Pv27", "co2cars_2024Pv29"), []),
        (("co2cars_2022Fv26", "co2cars_2023Pv27", "co2cars_2024Pv29"), ["co2cars_2022Fv26"]),  # an older year
        (("co2cars_2023Pv27", "co2cars_2023Fv28", "co2cars_2024Pv29"), ["co2cars_2023Fv28"]),  # final replaces P
        (("co2cars_2023Pv27", "co2cars_2024Pv29", "co2cars_2025Pv31"), ["co2cars_2025Pv31"]),  # a new year
    ):
        server = serve(listing(*tables))
        with client(server.url) as c:
            check = check_releases(c, last)
        assert check.new == new, tables
        assert check.changed == bool(new)
        assert ("no new EEA release" in check.summary()) == (not new)

    empty = serve(listing("co2cars"))
    with client(empty.url) as c, pytest.raises(DiscodataError, match=r"names no CO2Emission\.latest"):
        check_releases(c, last)


def test_a_run_trains_only_on_data_production_has_not_seen() -> None:
    from co2.pipeline.discover import decide
    from co2.releases import Discovery

    found = Discovery(
        tables={2023: "co2cars_2023Fv28", 2024: "co2cars_2024Pv29"},
        available={2023: "co2cars_2023Fv28", 2024: "co2cars_2024Pv29"},
        tables_from="metadata",
        note="",
        rows={"co2cars_2023Fv28": 10_700_000, "co2cars_2024Pv29": 10_800_000},
        source_url="https://discodata.eea.europa.eu",
    )
    same = found.fingerprint()
    assert decide(found, None, None, force=False) == (
        True,
        f"training on {', '.join(found.tables.values())}: no production model yet",
    )
    retrain, reason = decide(found, "7", same, force=False)
    assert not retrain and reason.startswith("nothing new: production version 7 was trained on co2cars_2023Fv28")
    assert "force_retrain" in reason
    retrain, reason = decide(found, "7", same, force=True)
    assert retrain and "(forced)" in reason
    # a revised table (more rows), another version, another source: new data
    for changed in (
        Discovery(**{**found.__dict__, "rows": {**found.rows, "co2cars_2024Pv29": 10_900_000}}),
        Discovery(**{**found.__dict__, "tables": {2023: "co2cars_2023Fv28", 2024: "co2cars_2024Fv30"}}),
        Discovery(**{**found.__dict__, "source_url": "http://127.0.0.1:8765"}),
    ):
        assert changed.fingerprint() != same
        retrain, reason = decide(changed, "7", same, force=False)
        assert retrain and "new data since production version 7" in reason
