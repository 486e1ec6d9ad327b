"""Which EEA tables a run trains on: the newest release of each registration year, found in discodata's
metadata listing, and the newest years of them.

The EEA publishes each year's cars first as a provisional table (`co2cars_2025Pv31`), then, months
later, as a final one with a higher version (`co2cars_2025Fv32`); both stay listed. `GET /md/`
lists every database, schema, table and column; its keys have been seen spelled `name` and
`Name`, so they are read without regard to case. A table whose name does not follow the pattern
(the combined `co2cars`, anything else) is not a yearly release and is left out.

When the listing cannot be read or names no car table, the configured tables (CO2_EEA_TABLES, or
the newest known when this release was made) are used, and the run says so. Tables set explicitly,
in settings or in the run's params, are used as they are: no listing is read.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from co2.discodata import DiscodataClient, DiscodataError, DiscodataUnavailableError
from co2.logs import get_logger
from co2.settings import Settings

log = get_logger("co2.releases")

DATABASE = "CO2Emission"
SCHEMA = "latest"
TABLE_NAME = re.compile(r"^co2cars_(?P<year>\d{4})(?P<status>[FP])v(?P<version>\d+)$", re.IGNORECASE)
# Said in a table's metadata description by the local discodata server of the tables it generated.
GENERATED_MARKER = "GENERATED"

TablesFrom = Literal["metadata", "settings", "params", "fallback"]


@dataclass(frozen=True, order=True)
class Release:
    """One yearly table; releases of a year order as the EEA supersedes them (final over provisional,
    then by version)."""

    year: int
    final: bool
    version: int
    table: str = field(compare=False)
    description: str = field(default="", compare=False)

    @property
    def generated(self) -> bool:
        return self.description.startswith(GENERATED_MARKER)


def parse_table(name: str, description: str = "") -> Release | None:
    """The release a table name stands for, or None when it is not a yearly car table."""
    match = TABLE_NAME.match(name.strip())
    if match is None:
        return None
    return Release(int(match["year"]), match["status"].upper() == "F", int(match["version"]), name.strip(), description)


def _key(entry: Mapping[str, Any], name: str) -> Any:
    """`entry[name]` whatever the case of its key (`name`, `Name`, `NAME`)."""
    for key, value in entry.items():
        if isinstance(key, str) and key.lower() == name:
            return value
    return None


def _named(entries: Any, name: str) -> Iterable[Mapping[str, Any]]:
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, Mapping) and str(_key(entry, "name") or "").lower() == name.lower():
            yield entry


def releases_in(listing: Any) -> tuple[list[Release], list[str]]:
    """The yearly car tables of `[CO2Emission].[latest]` in a metadata listing, and the names of its
    other tables (not yearly releases, left out)."""
    found: list[Release] = []
    other: list[str] = []
    for database in _named(listing, DATABASE):
        for schema in _named(_key(database, "schemas"), SCHEMA):
            for table in _key(schema, "tables") or ():
                if not isinstance(table, Mapping):
                    continue
                name = str(_key(table, "name") or "")
                release = parse_table(name, str(_key(table, "description") or ""))
                if release is None:
                    other.append(name)
                else:
                    found.append(release)
    return found, other


def newest_per_year(releases: Iterable[Release]) -> dict[int, Release]:
    """Per year, the final table if one is listed, else the provisional one with the highest version."""
    newest: dict[int, Release] = {}
    for release in releases:
        if release.year not in newest or release > newest[release.year]:
            newest[release.year] = release
    return dict(sorted(newest.items()))


@dataclass(frozen=True)
class Discovery:
    """The tables a run trains on, where they came from, and what identifies their content."""

    tables: dict[int, str]  # year -> table, the years trained on
    available: dict[int, str]  # year -> table, every year the run could have taken
    tables_from: TablesFrom
    note: str  # one sentence for the log, the task and the lineage
    rows: dict[str, int | None] = field(default_factory=dict)  # table -> rows on the service, None: not counted
    generated: list[str] = field(default_factory=list)  # tables the source says it generated (local server)
    source_url: str = ""

    @property
    def years(self) -> list[int]:
        return sorted(self.tables)

    def fingerprint(self) -> str:
        """What the trained data is: the source, each table and its row count. Equal fingerprints, same data."""
        content: dict[str, Any] = {
            "source": self.source_url,
            "tables": {str(y): t for y, t in sorted(self.tables.items())},
            "rows": {t: self.rows.get(t) for t in sorted(self.tables.values())},
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "tables": {str(y): t for y, t in self.tables.items()},
            "available": {str(y): t for y, t in self.available.items()},
            "years": self.years,
            "fingerprint": self.fingerprint(),
        }


def window(available: Mapping[int, str], years: Iterable[int], newest: int) -> dict[int, str]:
    """The requested years' tables (an error naming what is missing), or else the `newest` years'."""
    wanted = sorted(set(years))
    if not wanted:
        return {y: available[y] for y in sorted(available)[-newest:]}
    missing = [y for y in wanted if y not in available]
    if missing:
        known = ", ".join(str(y) for y in sorted(available)) or "none"
        raise ValueError(
            f"no EEA table for year(s) {', '.join(map(str, missing))} (years available: {known}); "
            "ask for available years, or name the table in CO2_EEA_TABLES or the run's `tables` param"
        )
    return {y: available[y] for y in wanted}


def discover(
    settings: Settings,
    client: DiscodataClient,
    *,
    years: Iterable[int] = (),
    tables: Mapping[int, str] | None = None,
) -> Discovery:
    """Choose the tables of a run: the run's `tables`, else CO2_EEA_TABLES when set, else the listing's
    newest release per year (the configured tables if the listing cannot be read); then the years."""
    generated: list[str] = []
    answering = True
    if tables:
        available, tables_from = dict(tables), "params"
        note = "tables named by the run's `tables` param"
    elif "eea_tables" in settings.model_fields_set:
        available, tables_from = dict(settings.eea_tables), "settings"
        note = "tables named by CO2_EEA_TABLES (no discovery)"
    else:
        available, tables_from, note, generated, answering = _from_listing(settings, client)
    chosen = window(available, years or settings.years, settings.window_years)
    # a service that did not answer the listing through every retry is not asked to count either (the
    # rows stay unknown, and the download says why): that would spend every retry again per table
    rows = {table: _count(client, table) if answering else None for table in chosen.values()}
    described = ", ".join(f"{y}: {t}" for y, t in chosen.items())
    return Discovery(
        tables=chosen,
        available=dict(sorted(available.items())),
        tables_from=tables_from,  # type: ignore[arg-type]
        note=f"{note}; training on {described}",
        rows=rows,
        generated=[t for t in generated if t in chosen.values()],
        source_url=client.base_url,
    )


def _from_listing(settings: Settings, client: DiscodataClient) -> tuple[dict[int, str], str, str, list[str], bool]:
    """Tables per year, where they came from, why, the generated ones, and whether the service answered."""
    fallback = dict(settings.eea_tables)
    answering = True
    try:
        listing = client.metadata()
    except DiscodataUnavailableError as exc:
        reason, answering = f"discodata did not answer for its metadata listing ({exc})", False
    except DiscodataError as exc:
        reason = f"discodata's metadata listing could not be read ({exc})"
    else:
        releases, other = releases_in(listing)
        if releases:
            newest = newest_per_year(releases)
            log.info(
                "releases_listed",
                tables=len(releases),
                newest=",".join(r.table for r in newest.values()),
                not_yearly=len(other),
            )
            return (
                {y: r.table for y, r in newest.items()},
                "metadata",
                "newest release of each year in discodata's metadata listing",
                [r.table for r in newest.values() if r.generated],
                True,
            )
        reason = f"discodata's metadata listing names no {DATABASE}.{SCHEMA} co2cars_<year><F|P>v<n> table"
    log.warning("releases_fallback", reason=reason, tables=",".join(fallback.values()))
    return fallback, "fallback", f"{reason}: fell back to the configured tables", [], answering


def _count(client: DiscodataClient, table: str) -> int | None:
    """The table's rows, or None when the service does not answer the count (the download then says why)."""
    try:
        return client.count(table)
    except DiscodataError as exc:
        log.warning("table_not_counted", table=table, error=str(exc)[:300])
        return None


@dataclass(frozen=True)
class ReleaseCheck:
    """What the daily watcher saw: the newest table of each year, and which of them are new to it."""

    newest: dict[int, str]
    new: list[str]  # tables not in what it saw last time (all of them the first time)

    @property
    def changed(self) -> bool:
        return bool(self.new)

    def summary(self) -> str:
        if not self.changed:
            return f"no new EEA release: newest tables still {', '.join(self.newest.values())}"
        return f"new EEA release(s): {', '.join(self.new)} (newest per year: {', '.join(self.newest.values())})"

    def to_extra(self) -> dict[str, Any]:
        """The asset event's `extra`: what the next check compares with."""
        return {"newest": {str(y): t for y, t in self.newest.items()}, "new": self.new}


def check_releases(client: DiscodataClient, last_seen: Mapping[str, str] | None) -> ReleaseCheck:
    """The listing's newest table per year against the watcher's last view (year -> table): a new year,
    a new version or a final table replacing a provisional one is new. An unreadable listing, or one
    with no car table, is an error: the watcher has nothing else to go on."""
    listing = client.metadata()
    releases, _ = releases_in(listing)
    if not releases:
        raise DiscodataError(
            f"discodata's metadata listing at {client.base_url} names no {DATABASE}.{SCHEMA} "
            "co2cars_<year><F|P>v<n> table"
        )
    newest = {y: r.table for y, r in newest_per_year(releases).items()}
    seen = set((last_seen or {}).values())
    return ReleaseCheck(newest, [table for table in newest.values() if table not in seen])
