"""Step 1: download one row per distinct vehicle configuration, with its registration count.

The EEA publishes ~10 M registrations a year; the server aggregates them (`GROUP BY` with
`COUNT(*) AS n`) so that only ~100k configurations cross the network. The answer lands in a new,
timestamped, read-only raw snapshot with a metadata file: a run never overwrites raw data.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from co2.discodata import DiscodataClient, DiscodataQueryError, qualified
from co2.files import new_directory, utc_stamp, write_json, write_parquet
from co2.logs import get_logger
from co2.pipeline.results import DownloadResult
from co2.settings import Settings
from co2_model import columns as col

log = get_logger("co2.download")

SOURCE_STRING_COLUMNS = ("MS", "Mk", "Ft", "Fm")


def aggregation_query(table: str, source_columns: list[str]) -> str:
    """One row per distinct configuration of the given columns, with its registration count."""
    listed = ", ".join(f"[{name}]" for name in source_columns)
    return (
        f"SELECT {listed}, COUNT(*) AS {col.COUNT_ALIAS} FROM {qualified(table)} "
        f"WHERE [Ewltp (g/km)] IS NOT NULL GROUP BY {listed} ORDER BY {listed}"
    )


def columns_to_request(available: list[str], table: str) -> list[str]:
    """The required columns (an error naming the missing ones) plus the optional ones the table has."""
    missing = [name for name in col.REQUIRED_SOURCE_COLUMNS if name not in available]
    if missing:
        raise DiscodataQueryError(
            f"table {table} lacks required column(s) {', '.join(missing)}; "
            "check that the run's tables (CO2_EEA_TABLES, the `tables` param) are CO2 cars tables"
        )
    return [*col.REQUIRED_SOURCE_COLUMNS, *(name for name in col.OPTIONAL_SOURCE_COLUMNS if name in available)]


def download(
    settings: Settings,
    tables: Mapping[int, str],
    source_url: str | None = None,
    *,
    discovery: dict[str, Any] | None = None,
) -> DownloadResult:
    """Query each year's table, page through the answers and write an immutable raw snapshot.

    `tables` maps registration years to their discodata tables (the `discover` step chooses them);
    `discovery` is kept in the snapshot's metadata, the start of the data's lineage.
    """
    if not tables:
        raise ValueError("no tables to download: pass at least one year's table")
    years = sorted(tables)
    url = source_url or settings.discodata_url
    started = datetime.now(UTC)
    frames: list[pd.DataFrame] = []
    queries: dict[str, str] = {}
    with DiscodataClient.from_settings(settings, url) as client:
        for year in years:
            table = tables[year]
            query = aggregation_query(table, columns_to_request(client.columns(table), table))
            queries[str(year)] = query
            frames.append(_download_year(client, query, year, settings.page_size))

    raw = pd.concat(frames, ignore_index=True)
    raw = _typed(raw)
    snapshot_dir = new_directory(settings.raw_dir, f"{utc_stamp()}_{'-'.join(map(str, years))}")
    snapshot_path = snapshot_dir / "snapshot.parquet"
    digest = write_parquet(raw, snapshot_path)
    registrations = int(raw[col.COUNT_ALIAS].sum())
    metadata = {
        "kind": "raw_snapshot",
        "source_url": url,
        "years": years,
        "tables": {str(y): tables[y] for y in years},
        "discovery": discovery or {},
        "queries": queries,
        "rows": len(raw),
        "registrations": registrations,
        "columns": list(raw.columns),
        "sha256": digest,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
    }
    metadata_path = snapshot_dir / "metadata.json"
    write_json(metadata, metadata_path)
    log.info(
        "download_finished", snapshot=str(snapshot_path), rows=len(raw), registrations=registrations, sha256=digest
    )
    return DownloadResult(str(snapshot_path), str(metadata_path), len(raw), registrations, digest)


def _download_year(client: DiscodataClient, query: str, year: int, page_size: int) -> pd.DataFrame:
    started = time.perf_counter()
    pages: list[pd.DataFrame] = []
    rows = registrations = 0
    for number, page in enumerate(client.pages(query, page_size), start=1):
        frame = pd.DataFrame.from_records(page)
        pages.append(frame)
        rows += len(frame)
        registrations += int(frame[col.COUNT_ALIAS].sum())
        log.info("download_page", year=year, page=number, rows_so_far=rows, registrations_so_far=registrations)
    if not pages:
        raise DiscodataQueryError(f"discodata returned no rows for {year}: is the table for {year} published yet?")
    result = pd.concat(pages, ignore_index=True)
    result.insert(0, "Year", year)
    log.info(
        "download_year",
        year=year,
        rows=rows,
        registrations=registrations,
        seconds=round(time.perf_counter() - started, 1),
    )
    return result


def _typed(raw: pd.DataFrame) -> pd.DataFrame:
    """Strings as strings and measurements as float; a column that is not numeric stays as it came,
    for validation to report."""
    for name in raw.columns:
        if name in SOURCE_STRING_COLUMNS:
            raw[name] = raw[name].astype("string")
        elif name == col.COUNT_ALIAS or name == "Year":
            raw[name] = raw[name].astype("int64")
        else:
            try:
                raw[name] = pd.to_numeric(raw[name]).astype("float64")
            except (ValueError, TypeError):
                log.warning("download_column_not_numeric", column=name)
    return raw
