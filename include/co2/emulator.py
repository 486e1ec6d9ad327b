"""A local, discodata-compatible SQL service for offline use and tests.

It loads a CSV with discodata column names into SQLite (which understands `[bracketed]`
identifiers), one table per registration year named as the settings name that year's EEA table,
and answers `GET /sql?query=&p=&nrOfHits=` with the real service's JSON shapes. The T-SQL the
pipeline sends runs for real: `[CO2Emission].[latest].[table]` names are mapped to the local
tables and `TOP n` becomes a `LIMIT`, so SQLite stops after n rows.

Any web page a developer opens can send it requests, so it is read-only by construction rather
than by a list of forbidden words: queries run on connections opened read-only, with
`PRAGMA query_only` and an authorizer that allows reading and nothing else; one statement per
request; each query bounded in time (`CO2_EMULATOR_QUERY_TIMEOUT_SECONDS`), in rows (a page) and
in bytes; requests for another host name than its own are refused (DNS rebinding). Each query has
its own connection, so a slow one does not hold up the others.

It lists its tables at `GET /md/` in the shape of discodata's metadata listing, and can publish a
new table while it runs (`POST /_emulator/publish {"table": "co2cars_2024Pv29"}`, or `co2
discodata-publish`), so that a release can be seen arriving: a new year is generated from the real
sample with the drift of co2.generated, a new version of a year revises that year's newest table.
`"listed_only": true` lists a table it does not answer, as the real service sometimes does.

It can be told to misbehave (HTTP 500, slow answers, dropped connections) through
`POST /_emulator/faults`, so that tests can prove the client's retries.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd

from co2 import generated
from co2.discodata import DiscodataQueryError
from co2.logs import get_logger
from co2.pipeline.download import columns_to_request
from co2.releases import DATABASE, SCHEMA, newest_per_year, parse_table
from co2.settings import Settings

log = get_logger("co2.emulator")

ERROR_INVALID_OBJECT = 10003
ERROR_SYNTAX = 102
ERROR_REFUSED = 10001
ERROR_TIMEOUT = -2  # SQL Server's "execution timeout expired"
ERROR_BAD_REQUEST = 400
REFUSED_MESSAGE = "Only single SELECT statements on published tables are allowed."

MAX_PAGE_SIZE = 100_000
MAX_PAGE_NUMBER = 2**31  # keeps (page - 1) * size inside SQLite's 64-bit OFFSET
MAX_ANSWER_BYTES = 64 * 2**20  # one page's JSON: a wide cross join must not take the machine's memory
MAX_VALUE_BYTES = 2**20  # one string or blob: zeroblob(1e9) and friends fail instead of allocating
MAX_CONTROL_BODY_BYTES = 4096  # the bodies of /_emulator/faults and /_emulator/publish
MAX_CONCURRENT_QUERIES = 8
IDLE_TIMEOUT_SECONDS = 30.0  # a keep-alive connection that sends nothing gives its thread back
DEFAULT_QUERY_TIMEOUT_SECONDS: float = Settings.model_fields["emulator_query_timeout_seconds"].default
PARKED_ANSWERS = 4  # half-read answers kept for their next page
PARKED_SECONDS = 60.0
PROGRESS_STEPS = 10_000  # SQLite VM instructions between two looks at the deadline
FETCH_ROWS = 1_000

_READ_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION})
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})

_QUALIFIED_TABLE = re.compile(r"\[?CO2Emission\]?\s*\.\s*\[?latest\]?\s*\.\s*\[?([A-Za-z0-9_]+)\]?", re.IGNORECASE)
_TOP = re.compile(r"^\s*SELECT\s+(DISTINCT\s+)?TOP\s*\(?\s*(\d+)\s*\)?", re.IGNORECASE)
_SELECT = re.compile(r"^\s*SELECT\b", re.IGNORECASE)
# SQLite's own lexemes, so that a comment or a quoted `;` reads here as SQLite will read it.
_LEXEMES = re.compile(
    r"(?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))"
    r"|(?P<quoted>'(?:[^']+|'')*(?:'|\Z)|\"(?:[^\"]+|\"\")*(?:\"|\Z)|\[[^\]]*(?:\]|\Z)|`(?:[^`]+|``)*(?:`|\Z))"
    r"|(?P<end>;)"
    r"|(?P<text>[^-/'\"\[`;]+|[-/])",
    re.DOTALL,
)


class QueryError(Exception):
    """A query the service answers with `{"errors": [...]}` (HTTP 200, as discodata does)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class BadRequestError(Exception):
    """A request that cannot be answered as asked: HTTP 400 with the reason in `errors`."""


class BusyError(Exception):
    """Every query slot stayed taken for the whole time limit: HTTP 503, worth a retry."""


@dataclass
class Faults:
    """Misbehaviour to apply to the next `count` /sql requests."""

    mode: str = "none"  # none | error500 | slow | drop
    count: int = 0
    delay_seconds: float = 0.0

    MODES = ("none", "error500", "slow", "drop")
    MAX_DELAY_SECONDS = 600.0


@dataclass(frozen=True)
class Page:
    """One page of an answer, already encoded: `rows` rows as the JSON array `body`."""

    rows: int
    body: bytes


def single_statement(query: str) -> str:
    """The query without its comments and final `;`; a BadRequestError if a second statement follows."""
    parts: list[str] = []
    for lexeme in _LEXEMES.finditer(query):
        if lexeme.lastgroup == "comment":
            parts.append(" ")
        elif lexeme.lastgroup == "end":
            rest = query[lexeme.end() :]
            if any(m.lastgroup != "comment" and m.group().strip() for m in _LEXEMES.finditer(rest)):
                raise BadRequestError("one statement per query: found another after ';'")
            break
        else:
            parts.append(lexeme.group())
    return "".join(parts).strip()


def translate(query: str) -> tuple[str, int | None]:
    """T-SQL as the pipeline sends it -> one SQLite SELECT, plus the `TOP n` limit if any."""
    sql = single_statement(query)
    if not _SELECT.match(sql):
        raise QueryError(REFUSED_MESSAGE, ERROR_REFUSED)
    sql = _QUALIFIED_TABLE.sub(lambda m: f"[{m.group(1)}]", sql)
    top: int | None = None
    match = _TOP.match(sql)
    if match:
        top = int(match.group(2))
        sql = "SELECT " + (match.group(1) or "") + sql[match.end() :]
    return sql, top


def _authorize_read(action: int, *_: str | None) -> int:
    """SQLite's authorizer: reading tables and calling functions, nothing else (no write, PRAGMA,
    ATTACH, VACUUM, transaction or recursive CTE), whatever the statement looks like."""
    return sqlite3.SQLITE_OK if action in _READ_ACTIONS else sqlite3.SQLITE_DENY


class _QueryConnection:
    """A read-only connection that gives up once its current request's deadline has passed."""

    def __init__(self, uri: str) -> None:
        self.deadline = math.inf
        self.sqlite = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        self.sqlite.execute("PRAGMA query_only=ON")
        self.sqlite.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        self.sqlite.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        self.sqlite.set_authorizer(_authorize_read)
        self.sqlite.set_progress_handler(self._expired, PROGRESS_STEPS)

    def _expired(self) -> int:
        return int(time.monotonic() > self.deadline)

    def close(self) -> None:
        self.sqlite.close()


class _Answer:
    """An executed query read page by page: the client's next page continues the same cursor."""

    def __init__(self, connection: _QueryConnection, cursor: sqlite3.Cursor) -> None:
        self.connection = connection
        self.cursor = cursor
        self.names = [d[0] for d in cursor.description or ()]
        self.parked_at = 0.0

    def read(self, wanted: int) -> Page:
        """Up to `wanted` rows as JSON, built row by row under the byte cap."""
        encoded: list[bytes] = []
        size = 2
        while len(encoded) < wanted:
            rows = self.cursor.fetchmany(min(FETCH_ROWS, wanted - len(encoded)))
            if not rows:
                break
            for row in rows:
                record = dict(zip(self.names, map(_json_value, row), strict=True))
                line = json.dumps(record, allow_nan=False).encode()
                size += len(line) + 1
                if size > MAX_ANSWER_BYTES:
                    raise BadRequestError(
                        f"the page exceeds {MAX_ANSWER_BYTES // 2**20} MB: ask for fewer rows (nrOfHits) or columns"
                    )
                encoded.append(line)
        return Page(len(encoded), b"[" + b",".join(encoded) + b"]")

    def close(self) -> None:
        self.connection.close()


def index_for_download(connection: sqlite3.Connection, table: str) -> bool:
    """Index `table` on the columns the download groups by, in its order (co2.pipeline.download).

    SQLite then answers the aggregation of a year's ~10 M registrations by reading the index in
    order, instead of sorting every row first: the real service answers from its own indexes, and
    the stand-in's cost should not dominate a run. False when the table lacks a column the download
    needs (its query fails anyway, and says which)."""
    quoted = table.replace("]", "]]")
    available = [str(row[1]) for row in connection.execute(f"PRAGMA table_info([{quoted}])")]
    try:
        grouped = columns_to_request(available, table)
    except DiscodataQueryError:
        return False
    listed = ", ".join(f"[{name}]" for name in grouped)
    connection.execute(f"CREATE INDEX IF NOT EXISTS [{quoted}__download] ON [{quoted}] ({listed})")
    return True


class DiscodataDatabase:
    """The embedded database behind the emulator: one table per registration year.

    Without a path the data lives in a private temporary file that only `append` writes; with a
    path (a SQLite file prepared elsewhere) it is only ever opened read-only.
    """

    def __init__(
        self, path: str | Path | None = None, query_timeout_seconds: float = DEFAULT_QUERY_TIMEOUT_SECONDS
    ) -> None:
        self.query_timeout_seconds = query_timeout_seconds
        self._writer: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()
        self._parked: OrderedDict[tuple[str, int], _Answer] = OrderedDict()
        self._parked_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT_QUERIES)
        self._descriptions: dict[str, str] = {}
        self._listed_only: set[str] = set()
        self.sample: pd.DataFrame | None = None  # the real rows new years are generated from
        self.publish_log: Path | None = None  # where publications are kept, to be replayed at the next start
        if path is None:
            folder = tempfile.mkdtemp(prefix="co2-discodata-")  # mode 0700
            weakref.finalize(self, shutil.rmtree, folder, True)
            file = Path(folder) / "discodata.sqlite"
            self._writer = sqlite3.connect(file, check_same_thread=False)
            self._writer.execute("PRAGMA journal_mode=OFF")  # a scratch copy: nothing to recover
            self._writer.execute("PRAGMA synchronous=OFF")
        else:
            file = Path(path)
            if not file.is_file():
                raise FileNotFoundError(f"no SQLite database at {file}")
        self._uri = f"{file.resolve().as_uri()}?mode=ro"

    @classmethod
    def from_csv(
        cls, csv_paths: Iterable[Path], settings: Settings, generate_years: Iterable[int] = ()
    ) -> DiscodataDatabase:
        """Load discodata-named CSVs, split by their `Year` column into the configured year tables, then
        generate `generate_years` from them (co2.generated): final tables, the newest year provisional."""
        db = cls(query_timeout_seconds=settings.emulator_query_timeout_seconds)
        loaded: list[pd.DataFrame] = []
        for csv_path in csv_paths:
            for chunk in pd.read_csv(csv_path, low_memory=False, chunksize=500_000):
                if "Year" not in chunk.columns:
                    raise ValueError(f"{csv_path} has no 'Year' column: the emulator needs it to pick each row's table")
                db.append_by_year(chunk, settings)
                loaded.append(chunk)
        db.sample = pd.concat(loaded, ignore_index=True) if loaded else None
        wanted = sorted(set(generate_years))
        for year in wanted:
            db.publish(generated.eea_table(year, final=year != wanted[-1]))
        for table in db.tables():
            log.info("emulator_table_loaded", table=table, rows=db.count(table))
        return db

    def append_by_year(self, rows: pd.DataFrame, settings: Settings) -> None:
        """Each row into the table the settings name for its `Year`."""
        for year, of_year in rows.groupby("Year"):
            self.append(settings.table_for(int(str(year))), of_year)

    def append(self, table: str, rows: pd.DataFrame, description: str = "") -> None:
        if self._writer is None:
            raise PermissionError("this database was opened from a file and is served read-only")
        with self._write_lock:
            self._close_parked()  # their read locks would keep the writer out
            rows.to_sql(table, self._writer, if_exists="append", index=False, chunksize=50_000)
            index_for_download(self._writer, table)
            self._writer.commit()
            if description:
                self._descriptions[table] = description

    def publish(self, table: str, *, listed_only: bool = False) -> int:
        """Publish a new yearly table and return its rows: a new year generated from the sample, a new
        version of a year as a revision of its newest table; `listed_only` lists a table not served."""
        release = parse_table(table)
        if release is None:
            raise ValueError(f"{table[:100]!r} is not a yearly table name such as co2cars_2024Pv29")
        if table in self.tables() or table in self._listed_only:
            raise ValueError(f"{table} is published already; a new release takes a new version number")
        if listed_only:
            self._listed_only.add(table)
            log.info("emulator_table_listed", table=table)
            self._remember(table, listed_only=True)
            return 0
        if self._writer is None:
            raise PermissionError("this database was opened from a file and is served read-only: publish needs --csv")
        same_year = newest_per_year(r for t in self.tables() if (r := parse_table(t)) and r.year == release.year)
        if same_year:
            previous = same_year[release.year].table
            with self._write_lock:
                rows = pd.read_sql(f"SELECT * FROM [{previous}]", self._writer)
            rows = generated.finalised(rows, seed=release.version) if release.final else rows
            if "Status" in rows:
                rows["Status"] = "F" if release.final else "P"
            description = self._descriptions.get(previous, "")
        elif self.sample is not None and release.year > generated.SAMPLE_YEAR:
            rows = generated.generate_year(self.sample, release.year, final=release.final, seed=release.version)
            description = generated.DESCRIPTION
        else:
            raise ValueError(f"no rows to publish {table} from: load a CSV of a year before {release.year}")
        self.append(table, rows, description)
        log.info("emulator_table_published", table=table, rows=len(rows), generated=bool(description))
        self._remember(table, listed_only=False)
        return len(rows)

    def _remember(self, table: str, *, listed_only: bool) -> None:
        if self.publish_log is not None:
            with self.publish_log.open("a", encoding="utf-8") as log_file:
                log_file.write(json.dumps({"table": table, "listed_only": listed_only}) + "\n")

    def replay(self, publish_log: Path) -> None:
        """Publish again what `publish_log` recorded (the generated rows come out the same), then record there.

        A restarted server thus lists what it listed before, as the real service keeps its releases."""
        if publish_log.exists():
            for line in publish_log.read_text(encoding="utf-8").splitlines():
                entry = json.loads(line)
                self.publish(str(entry["table"]), listed_only=bool(entry.get("listed_only")))
        self.publish_log = publish_log

    def listing(self, base_url: str = "") -> list[dict[str, Any]]:
        """The tables as discodata's `GET /md/` lists them (database, schema, tables, columns)."""
        tables = []
        for table in sorted({*self.tables(), *self._listed_only}):
            names = self.column_names(table) if table not in self._listed_only else ["ID", "Year"]
            entry: dict[str, Any] = {
                "name": table,
                "Columns": [{"name": name, "table": table} for name in names],
                "datalakeUrl": f"{base_url}/datalake/{DATABASE}/{SCHEMA}/{table}",
            }
            if table in self._descriptions:
                entry["description"] = self._descriptions[table]
            tables.append(entry)
        return [{"Name": DATABASE, "Schemas": [{"Name": SCHEMA, "Tables": tables}]}]

    def column_names(self, table: str) -> list[str]:
        connection = _QueryConnection(self._uri)
        try:
            cursor = connection.sqlite.execute(f"SELECT * FROM [{table.replace(']', ']]')}] LIMIT 0")
            return [d[0] for d in cursor.description or ()]
        finally:
            connection.close()

    def count(self, table: str) -> int:
        return int(self._read_one(f"SELECT COUNT(*) FROM [{table.replace(']', ']]')}]")[0][0])

    def tables(self) -> list[str]:
        return [r[0] for r in self._read_one("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]

    def _read_one(self, sql: str) -> list[tuple[Any, ...]]:
        connection = _QueryConnection(self._uri)
        try:
            return connection.sqlite.execute(sql).fetchall()
        finally:
            connection.close()

    def run(self, query: str, page: int, page_size: int) -> Page:
        """Run one query and return one page of it (pages count from 1).

        The next page of the same query continues the cursor of this one (no second execution,
        nothing materialised beyond a page); another page is a fresh execution from its `OFFSET`.
        """
        sql, top = translate(query)
        page_size = min(max(page_size, 1), MAX_PAGE_SIZE)
        start = (max(page, 1) - 1) * page_size
        wanted = page_size if top is None else min(page_size, max(top - start, 0))
        if wanted == 0:
            return Page(0, b"[]")
        if not self._slots.acquire(timeout=self.query_timeout_seconds):
            raise BusyError(f"{MAX_CONCURRENT_QUERIES} queries are running; try again")
        try:
            answer = self._unpark(query, start)
            with self._sqlite_errors():
                if answer is None:
                    answer = self._execute(sql, start, top)
                answer.connection.deadline = time.monotonic() + self.query_timeout_seconds
                try:
                    result = answer.read(wanted)
                except BaseException:
                    answer.close()
                    raise
        finally:
            self._slots.release()
        if result.rows == wanted:
            self._park(query, start + wanted, answer)
        else:
            answer.close()
        return result

    def _execute(self, sql: str, start: int, top: int | None) -> _Answer:
        # The T-SQL dialect has no LIMIT of its own, so one appended here is the only one.
        limit = -1 if top is None else top - start
        connection = _QueryConnection(self._uri)
        connection.deadline = time.monotonic() + self.query_timeout_seconds
        try:
            cursor = connection.sqlite.execute(f"{sql}\nLIMIT {limit} OFFSET {start}")
        except BaseException:
            connection.close()
            raise
        return _Answer(connection, cursor)

    @contextmanager
    def _sqlite_errors(self) -> Iterator[None]:
        """SQLite's exceptions as the answers discodata gives."""
        try:
            yield
        except sqlite3.ProgrammingError as exc:  # a second statement (caught earlier), a closed cursor
            raise BadRequestError(str(exc)) from None
        except sqlite3.Error as exc:
            message = str(exc)
            missing = re.match(r"no such table: (.+)", message)
            if missing:
                raise QueryError(f"Invalid object name '{missing.group(1)}'.", ERROR_INVALID_OBJECT) from None
            if message == "interrupted":
                raise QueryError(
                    f"the query ran longer than the emulator's {self.query_timeout_seconds:g} s "
                    "(CO2_EMULATOR_QUERY_TIMEOUT_SECONDS)",
                    ERROR_TIMEOUT,
                ) from None
            if "not authorized" in message or "authorization denied" in message or "readonly" in message:
                raise QueryError(
                    "Only single SELECT statements on published tables are allowed.", ERROR_REFUSED
                ) from None
            if "too big" in message:
                raise QueryError(f"a value exceeds the emulator's {MAX_VALUE_BYTES} bytes", ERROR_REFUSED) from None
            raise QueryError(f"Incorrect syntax: {message}", ERROR_SYNTAX) from None

    def _park(self, query: str, next_row: int, answer: _Answer) -> None:
        answer.parked_at = time.monotonic()
        with self._parked_lock:
            self._parked[(query, next_row)] = answer
            stale = time.monotonic() - PARKED_SECONDS
            while self._parked and (
                len(self._parked) > PARKED_ANSWERS or next(iter(self._parked.values())).parked_at < stale
            ):
                self._parked.popitem(last=False)[1].close()

    def _unpark(self, query: str, start: int) -> _Answer | None:
        with self._parked_lock:
            return self._parked.pop((query, start), None)

    def _close_parked(self) -> None:
        with self._parked_lock:
            while self._parked:
                self._parked.popitem()[1].close()

    def close(self) -> None:
        self._close_parked()
        if self._writer is not None:
            self._writer.close()


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        raise BadRequestError("the answer holds binary (BLOB) values, which discodata does not serve")
    return value


class _Handler(BaseHTTPRequestHandler):
    server: EmulatorServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_timeout_seconds)

    def log_message(self, format: str, *args: Any) -> None:
        return  # requests are logged as structured events below

    def _send_body(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _send_json(self, status: int, body: Any) -> None:
        self._send_body(status, json.dumps(body, allow_nan=False).encode())

    def _send_error(self, status: int, message: str, code: int) -> None:
        self._send_json(status, {"errors": [{"error": message, "errorcode": code}]})

    def _host_allowed(self) -> bool:
        """Only requests addressed to this server's own names: a DNS-rebinding page's are not."""
        host = (self.headers.get("Host") or "").strip().lower()
        name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] or host
        if name.rstrip(".") in self.server.allowed_hosts:
            return True
        log.warning("emulator_host_refused", host=host[:100])
        self._send_error(403, "unknown Host; add it to CO2_EMULATOR_ALLOWED_HOSTS", 403)
        return False

    def _guarded(self, route: Callable[[], None]) -> None:
        """An unexpected failure still gets a JSON answer instead of a dropped connection."""
        try:
            if self._host_allowed():
                route()
        except Exception as exc:  # the server must answer whatever went wrong
            log.exception("emulator_request_failed", error=type(exc).__name__)
            self.close_connection = True
            with suppress(OSError):
                self._send_error(500, f"internal error ({type(exc).__name__})", 500)

    def do_GET(self) -> None:
        self._guarded(self._get)

    def do_POST(self) -> None:
        self._guarded(self._post)

    def _get(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/_emulator/faults":
            faults = self.server.faults
            self._send_json(200, {"mode": faults.mode, "count": faults.count, "delay_seconds": faults.delay_seconds})
            return
        if url.path == "/health":
            self._send_json(200, {"status": "ok", "tables": self.server.db.tables()})
            return
        if url.path in ("/md", "/md/"):
            host = self.headers.get("Host") or self.server.url.split("//", 1)[1]
            self._send_json(200, self.server.db.listing(f"http://{host}"))
            return
        if url.path != "/sql":
            self._send_error(404, f"no route {url.path}; use /sql", 404)
            return
        if self.server.apply_fault(self):
            return
        params = parse_qs(url.query)
        query = params.get("query", [""])[0]
        try:
            page = int(params.get("p", ["1"])[0])
            page_size = int(params.get("nrOfHits", ["100"])[0])
        except ValueError:
            self._send_error(200, "p and nrOfHits must be integers", ERROR_SYNTAX)
            return
        if not query.strip():
            self._send_error(200, "query is empty", ERROR_SYNTAX)
            return
        if not 1 <= page <= MAX_PAGE_NUMBER:
            self._send_error(400, f"p must be between 1 and {MAX_PAGE_NUMBER}", ERROR_BAD_REQUEST)
            return
        started = time.perf_counter()
        try:
            result = self.server.db.run(query, page, page_size)
        except QueryError as exc:
            log.info("emulator_query_error", error=str(exc), code=exc.code)
            self._send_error(200, str(exc), exc.code)
            return
        except BadRequestError as exc:
            log.info("emulator_bad_request", error=str(exc))
            self._send_error(400, str(exc), ERROR_BAD_REQUEST)
            return
        except BusyError as exc:
            self._send_error(503, str(exc), 503)
            return
        log.info("emulator_query", page=page, rows=result.rows, seconds=round(time.perf_counter() - started, 3))
        self._send_body(200, b'{"results": ' + result.body + b"}")

    def _post(self) -> None:
        path = urlsplit(self.path).path
        if path not in ("/_emulator/faults", "/_emulator/publish"):
            self.close_connection = True  # its body is left unread
            self._send_error(404, "no such route", 404)
            return
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_CONTROL_BODY_BYTES:
            self.close_connection = True
            self._send_error(400, f"Content-Length must be 0 to {MAX_CONTROL_BODY_BYTES} bytes", ERROR_BAD_REQUEST)
            return
        body = self.rfile.read(length)
        if path == "/_emulator/publish":
            self._publish(body)
            return
        try:
            faults = _parse_faults(body)
        except (ValueError, TypeError) as exc:
            self._send_error(400, str(exc), ERROR_BAD_REQUEST)
            return
        self.server.set_faults(faults)
        self._send_json(200, {"mode": faults.mode, "count": faults.count, "delay_seconds": faults.delay_seconds})

    def _publish(self, raw: bytes) -> None:
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict) or not isinstance(body.get("table"), str):
                raise ValueError('the body must be a JSON object such as {"table": "co2cars_2024Pv29"}')
            listed_only = body.get("listed_only", False)
            if not isinstance(listed_only, bool):
                raise ValueError("listed_only must be true or false")
            rows = self.server.db.publish(body["table"], listed_only=listed_only)
        except (ValueError, PermissionError) as exc:
            self._send_error(400, str(exc), ERROR_BAD_REQUEST)
            return
        self._send_json(200, {"table": body["table"], "rows": rows, "listed_only": listed_only})


def _parse_faults(raw: bytes) -> Faults:
    body = json.loads(raw or b"{}")
    if not isinstance(body, dict):
        raise ValueError('the body must be a JSON object such as {"mode": "error500", "count": 2}')
    faults = Faults(
        mode=str(body.get("mode", "none")),
        count=int(body.get("count", 0)),
        delay_seconds=float(body.get("delay_seconds", 0.0)),
    )
    if faults.mode not in Faults.MODES:
        raise ValueError(f"mode must be one of {', '.join(Faults.MODES)}")
    if faults.count < 0:
        raise ValueError("count must be 0 or more")
    if not 0.0 <= faults.delay_seconds <= Faults.MAX_DELAY_SECONDS:  # NaN fails this too
        raise ValueError(f"delay_seconds must be between 0 and {Faults.MAX_DELAY_SECONDS:g}")
    return faults


class EmulatorServer(ThreadingHTTPServer):
    """The HTTP server; `serve_forever()` in a thread or the `co2 discodata-emulator` command.

    It answers requests whose `Host` is one of its own names: localhost, its loopback addresses,
    the address it listens on, and `allowed_hosts` (the names other containers use for it).
    """

    daemon_threads = True

    def __init__(
        self,
        db: DiscodataDatabase,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        allowed_hosts: Iterable[str] = (),
        idle_timeout_seconds: float = IDLE_TIMEOUT_SECONDS,
    ):
        super().__init__((host, port), _Handler)
        self.db = db
        self.idle_timeout_seconds = idle_timeout_seconds
        own = set() if host in _WILDCARD_HOSTS else {host.lower()}
        self.allowed_hosts = frozenset(_LOCAL_HOSTS | own | {h.strip().lower() for h in allowed_hosts})
        self._faults = faults or Faults()
        self._faults_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is one line in the log, not a traceback on stderr."""
        log.warning("emulator_connection_failed", client=str(client_address[0]), exc_info=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host if isinstance(host, str) else host.decode()}:{port}"

    @property
    def faults(self) -> Faults:
        with self._faults_lock:
            return Faults(self._faults.mode, self._faults.count, self._faults.delay_seconds)

    def set_faults(self, faults: Faults) -> None:
        with self._faults_lock:
            self._faults = faults
        log.info("emulator_faults_set", mode=faults.mode, count=faults.count, delay_seconds=faults.delay_seconds)

    def apply_fault(self, handler: _Handler) -> bool:
        """Misbehave for this request if told to; True when the request has been dealt with."""
        with self._faults_lock:
            faults = self._faults
            if faults.mode == "none" or faults.count <= 0:
                return False
            faults.count -= 1
        log.info("emulator_fault", mode=faults.mode, remaining=faults.count)
        if faults.mode == "error500":
            handler._send_error(500, "Internal server error (injected)", 500)
        elif faults.mode == "slow":
            time.sleep(faults.delay_seconds)
            return False  # answer for real, late
        elif faults.mode == "drop":
            handler.close_connection = True
            handler.connection.shutdown(2)  # socket.SHUT_RDWR: the client sees the connection drop
        return True
