"""A local, discodata-compatible SQL service for offline use and tests.

It loads a CSV with discodata column names into SQLite (which understands `[bracketed]`
identifiers), one table per registration year named as the settings name that year's EEA table,
and answers `GET /sql?query=&p=&nrOfHits=` with the real service's JSON shapes. The T-SQL the
pipeline sends runs for real: `[CO2Emission].[latest].[table]` names are mapped to the local
tables and `TOP n` becomes a `LIMIT`.

It can be told to misbehave (HTTP 500, slow answers, dropped connections) through
`POST /_emulator/faults`, so that tests can prove the client's retries.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd

from co2.logs import get_logger
from co2.settings import Settings

log = get_logger("co2.emulator")

ERROR_INVALID_OBJECT = 10003
ERROR_SYNTAX = 102
ERROR_REFUSED = 10001
MAX_PAGE_SIZE = 100_000

_QUALIFIED_TABLE = re.compile(r"\[?CO2Emission\]?\s*\.\s*\[?latest\]?\s*\.\s*\[?([A-Za-z0-9_]+)\]?", re.IGNORECASE)
_TOP = re.compile(r"^\s*SELECT\s+(DISTINCT\s+)?TOP\s*\(?\s*(\d+)\s*\)?", re.IGNORECASE)
_REFUSED = re.compile(
    r"^\s*WITH\b|\b(INSERT|UPDATE|DELETE|DROP|CREATE|ALTER|TRUNCATE|EXEC|MERGE|ATTACH|PRAGMA)\b|\bsys\.",
    re.IGNORECASE,
)


class QueryError(Exception):
    """A query the service answers with `{"errors": [...]}`."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Faults:
    """Misbehaviour to apply to the next `count` /sql requests."""

    mode: str = "none"  # none | error500 | slow | drop
    count: int = 0
    delay_seconds: float = 0.0

    MODES = ("none", "error500", "slow", "drop")


def translate(query: str) -> tuple[str, int | None]:
    """T-SQL as the pipeline sends it -> SQLite, plus the `TOP n` limit if any."""
    if _REFUSED.search(query):
        raise QueryError("Only single SELECT statements on published tables are allowed.", ERROR_REFUSED)
    sql = _QUALIFIED_TABLE.sub(lambda m: f"[{m.group(1)}]", query)
    top: int | None = None
    match = _TOP.match(sql)
    if match:
        top = int(match.group(2))
        sql = "SELECT " + (match.group(1) or "") + sql[match.end() :]
    return sql, top


class DiscodataDatabase:
    """The embedded database behind the emulator: one table per registration year."""

    def __init__(self, path: str = ":memory:") -> None:
        self._conn = sqlite3.connect(path, check_same_thread=False)
        self._lock = threading.Lock()
        self._last: tuple[str, list[dict[str, Any]]] | None = None

    @classmethod
    def from_csv(cls, csv_paths: Iterable[Path], settings: Settings, db_path: str = ":memory:") -> DiscodataDatabase:
        """Load discodata-named CSVs, split by their `Year` column into the configured year tables."""
        db = cls(db_path)
        for csv_path in csv_paths:
            for chunk in pd.read_csv(csv_path, low_memory=False, chunksize=500_000):
                if "Year" not in chunk.columns:
                    raise ValueError(f"{csv_path} has no 'Year' column: the emulator needs it to pick each row's table")
                db.append_by_year(chunk, settings)
        for table in db.tables():
            log.info("emulator_table_loaded", table=table, rows=db.count(table))
        return db

    def append_by_year(self, rows: pd.DataFrame, settings: Settings) -> None:
        """Each row into the table the settings name for its `Year`."""
        for year, of_year in rows.groupby("Year"):
            self.append(settings.table_for(int(str(year))), of_year)

    def append(self, table: str, rows: pd.DataFrame) -> None:
        with self._lock:
            rows.to_sql(table, self._conn, if_exists="append", index=False, chunksize=50_000)
            self._last = None

    def count(self, table: str) -> int:
        with self._lock:
            return int(self._conn.execute(f"SELECT COUNT(*) FROM [{table}]").fetchone()[0])

    def tables(self) -> list[str]:
        with self._lock:
            cur = self._conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
            return [r[0] for r in cur.fetchall()]

    def run(self, query: str, page: int, page_size: int) -> list[dict[str, Any]]:
        """Run one query and return one page of it (pages count from 1)."""
        sql, top = translate(query)
        with self._lock:
            # The client pages through the same query: keep its full answer once computed.
            if self._last is not None and self._last[0] == query:
                rows = self._last[1]
            else:
                rows = self._execute(sql)
                if top is not None:
                    rows = rows[:top]
                self._last = (query, rows)
        start = (page - 1) * page_size
        return rows[start : start + page_size]

    def _execute(self, sql: str) -> list[dict[str, Any]]:
        try:
            cur = self._conn.execute(sql)
        except sqlite3.OperationalError as exc:
            message = str(exc)
            missing = re.match(r"no such table: (.+)", message)
            if missing:
                raise QueryError(f"Invalid object name '{missing.group(1)}'.", ERROR_INVALID_OBJECT) from None
            raise QueryError(f"Incorrect syntax: {message}", ERROR_SYNTAX) from None
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, map(_json_value, row), strict=True)) for row in cur.fetchall()]


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class _Handler(BaseHTTPRequestHandler):
    server: EmulatorServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return  # requests are logged as structured events below

    def _send_json(self, status: int, body: Any) -> None:
        payload = json.dumps(body, allow_nan=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/_emulator/faults":
            faults = self.server.faults
            self._send_json(200, {"mode": faults.mode, "count": faults.count, "delay_seconds": faults.delay_seconds})
            return
        if url.path == "/health":
            self._send_json(200, {"status": "ok", "tables": self.server.db.tables()})
            return
        if url.path != "/sql":
            self._send_json(404, {"errors": [{"error": f"no route {url.path}; use /sql", "errorcode": 404}]})
            return
        if self.server.apply_fault(self):
            return
        params = parse_qs(url.query)
        query = params.get("query", [""])[0]
        try:
            page = int(params.get("p", ["1"])[0])
            page_size = int(params.get("nrOfHits", ["100"])[0])
        except ValueError:
            self._send_json(200, {"errors": [{"error": "p and nrOfHits must be integers", "errorcode": ERROR_SYNTAX}]})
            return
        if not query.strip():
            self._send_json(200, {"errors": [{"error": "query is empty", "errorcode": ERROR_SYNTAX}]})
            return
        page, page_size = max(page, 1), min(max(page_size, 1), MAX_PAGE_SIZE)
        started = time.perf_counter()
        try:
            rows = self.server.db.run(query, page, page_size)
        except QueryError as exc:
            log.info("emulator_query_error", error=str(exc), code=exc.code)
            self._send_json(200, {"errors": [{"error": str(exc), "errorcode": exc.code}]})
            return
        log.info("emulator_query", page=page, rows=len(rows), seconds=round(time.perf_counter() - started, 3))
        self._send_json(200, {"results": rows})

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/_emulator/faults":
            self._send_json(404, {"errors": [{"error": "no such route", "errorcode": 404}]})
            return
        length = int(self.headers.get("Content-Length", "0"))
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            faults = Faults(
                mode=str(body.get("mode", "none")),
                count=int(body.get("count", 0)),
                delay_seconds=float(body.get("delay_seconds", 0.0)),
            )
            if faults.mode not in Faults.MODES:
                raise ValueError(f"mode must be one of {', '.join(Faults.MODES)}")
        except (ValueError, TypeError) as exc:
            self._send_json(400, {"errors": [{"error": str(exc), "errorcode": 400}]})
            return
        self.server.set_faults(faults)
        self._send_json(200, {"mode": faults.mode, "count": faults.count, "delay_seconds": faults.delay_seconds})


class EmulatorServer(ThreadingHTTPServer):
    """The HTTP server; `serve_forever()` in a thread or the `co2 discodata-emulator` command."""

    daemon_threads = True

    def __init__(self, db: DiscodataDatabase, host: str = "127.0.0.1", port: int = 0, faults: Faults | None = None):
        super().__init__((host, port), _Handler)
        self.db = db
        self._faults = faults or Faults()
        self._faults_lock = threading.Lock()

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
            handler._send_json(500, {"errors": [{"error": "Internal server error (injected)", "errorcode": 500}]})
        elif faults.mode == "slow":
            time.sleep(faults.delay_seconds)
            return False  # answer for real, late
        elif faults.mode == "drop":
            handler.close_connection = True
            handler.connection.shutdown(2)  # socket.SHUT_RDWR: the client sees the connection drop
        return True
