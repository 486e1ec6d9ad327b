"""StatsD in, Prometheus out: statsd_exporter's translation of Airflow's metrics for the local platform.

Compose runs the real exporter (prom/statsd-exporter) with deploy/statsd/mapping.yml; no package of this
machine's registries ships its binary, so `co2 up` runs this bridge instead, on the same mapping file and by
the exporter's documented rules, so that the same series (and so the same alert rules and dashboards) exist
on one machine as in compose:

- a line is `name[,tag=value...]:value|type[|@rate]`; InfluxDB-style tags become labels;
- glob mappings, in file order, the first match wins; `*` stands for one dot-separated component and
  `$n` / `${n}` in the name and labels for the n-th one; mapping labels win over tags;
- timers (`ms`) are observed in seconds, as histograms or summaries (`observer_type`, else the defaults',
  also for names no mapping matches);
- `action: drop` discards what its glob matches;
- a name no mapping matches is exported with every character outside [a-zA-Z0-9_] turned into `_`;
- a metric keeps the kind and label names it was first seen with; a line that disagrees is refused
  (the exporter's "inconsistent label set").

Only the features the mapping file uses are accepted: anything else in it is refused at start, loudly.
A line the bridge cannot read is counted (`co2_statsd_bridge_lines_total{outcome="malformed"}`) and
skipped: a bad packet never stops the metrics of the others.
"""

from __future__ import annotations

import math
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml
from prometheus_client.metrics_core import Metric

from co2.logs import get_logger

log = get_logger("co2.statsd_bridge")

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MAPPING_KEYS = {"match", "name", "labels", "observer_type", "histogram_options", "action"}
DEFAULT_KEYS = {"observer_type", "histogram_options", "ttl"}
STATSD_TYPES = {"c": "counter", "g": "gauge", "ms": "observer", "h": "observer", "d": "observer"}
OUTCOMES = ("exported", "dropped", "malformed", "conflicting")
LOGGED_REFUSALS = 20  # refused lines logged per outcome; all are counted


class MappingError(ValueError):
    """The mapping file uses a feature the bridge does not implement (it would translate it wrongly)."""


class ConflictError(ValueError):
    """A line disagrees with the kind or label names its metric was first seen with."""


@dataclass(frozen=True)
class StatsdLine:
    name: str
    tags: dict[str, str]
    value: float
    kind: str  # counter, gauge, observer
    delta: bool = False

    @classmethod
    def parse(cls, line: str) -> StatsdLine:
        """One StatsD line; ValueError naming what is wrong with it."""
        head, sep, rest = line.rpartition(":")
        if not sep or not head or "|" not in rest:
            raise ValueError(f"not a StatsD line: {line!r}")
        name, *tag_parts = head.split(",")
        tags = {}
        for part in tag_parts:
            key, sep, value = part.partition("=")
            if not sep or not key:
                raise ValueError(f"bad InfluxDB tag {part!r} in {line!r}")
            tags[key] = value
        value_text, statsd_type, *extras = rest.split("|")
        if statsd_type not in STATSD_TYPES:
            raise ValueError(f"unknown StatsD type {statsd_type!r} in {line!r}")
        rate = 1.0
        for extra in extras:
            if not extra.startswith("@"):
                raise ValueError(f"unsupported StatsD extension {extra!r} in {line!r}")
            rate = float(extra[1:])
            if not 0 < rate <= 1:
                raise ValueError(f"sample rate {rate} outside (0, 1] in {line!r}")
        kind = STATSD_TYPES[statsd_type]
        delta = kind == "gauge" and value_text[:1] in "+-"
        number = float(value_text)
        if not math.isfinite(number):
            raise ValueError(f"value {value_text!r} is not a finite number in {line!r}")
        if kind == "counter":
            number /= rate
        if statsd_type == "ms":
            number /= 1000.0
        return cls(name, tags, number, kind, delta)


@dataclass(frozen=True)
class Mapping:
    match: str
    name: str
    labels: dict[str, str]
    observer_type: str
    buckets: tuple[float, ...]
    drop: bool = False

    def apply(self, statsd_name: str) -> tuple[str, dict[str, str]] | None:
        """The metric name and mapping labels for `statsd_name`, or None if this glob does not match it."""
        pattern, parts = self.match.split("."), statsd_name.split(".")
        if len(pattern) != len(parts):
            return None
        captured = []
        for glob, part in zip(pattern, parts, strict=True):
            if glob == "*":
                if not part:
                    return None
                captured.append(part)
            elif glob != part:
                return None

        def expand(template: str) -> str:
            return re.sub(r"\$\{?(\d+)\}?", lambda m: captured[int(m.group(1)) - 1], template)

        return expand(self.name), {k: expand(v) for k, v in self.labels.items()}


@dataclass(frozen=True)
class Sample:
    """One StatsD line once mapped: the series it feeds and how."""

    statsd_name: str
    name: str
    labels: dict[str, str]
    kind: str  # counter, gauge, histogram, summary
    value: float
    delta: bool
    buckets: tuple[float, ...]
    mapping: Mapping | None


class StatsdMapping:
    """deploy/statsd/mapping.yml: which Prometheus series each StatsD name becomes."""

    def __init__(self, config: dict[str, Any]) -> None:
        unknown = set(config) - {"defaults", "mappings"}
        if unknown:
            raise MappingError(f"mapping file keys the bridge does not implement: {sorted(unknown)}")
        defaults = config.get("defaults") or {}
        if set(defaults) - DEFAULT_KEYS:
            raise MappingError(f"defaults the bridge does not implement: {sorted(set(defaults) - DEFAULT_KEYS)}")
        if defaults.get("ttl", 0) != 0:
            raise MappingError("only `ttl: 0` (series never expire) is implemented")
        self.default_observer = _observer(defaults.get("observer_type", "summary"), defaults)
        self.default_buckets = _buckets(defaults.get("histogram_options", {}))
        self.mappings: list[Mapping] = []
        for entry in config.get("mappings") or []:
            if set(entry) - MAPPING_KEYS or entry.get("match_type", "glob") != "glob":
                raise MappingError(f"mapping keys the bridge does not implement: {entry}")
            if any("*" in part and part != "*" for part in entry["match"].split(".")):
                raise MappingError(f"only whole-component `*` globs are implemented: {entry['match']}")
            if entry.get("action", "map") not in ("map", "drop"):
                raise MappingError(f"unknown action in {entry}")
            self.mappings.append(
                Mapping(
                    entry["match"],
                    entry["name"],
                    {str(k): str(v) for k, v in (entry.get("labels") or {}).items()},
                    _observer(entry.get("observer_type", self.default_observer), entry),
                    _buckets(entry["histogram_options"]) if "histogram_options" in entry else self.default_buckets,
                    entry.get("action") == "drop",
                )
            )

    @classmethod
    def from_file(cls, path: Path) -> StatsdMapping:
        return cls(yaml.safe_load(path.read_text()) or {})

    def map_name(self, statsd_name: str) -> tuple[str, dict[str, str], Mapping | None]:
        for mapping in self.mappings:
            mapped = mapping.apply(statsd_name)
            if mapped is not None:
                return mapped[0], mapped[1], mapping
        name = re.sub(r"[^a-zA-Z0-9_]", "_", statsd_name)
        return ("_" + name if name[:1].isdigit() else name), {}, None

    def translate(self, line: str) -> Sample:
        """The sample a line feeds (`mapping.drop` says it is discarded); ValueError if it is malformed."""
        parsed = StatsdLine.parse(line)
        name, mapping_labels, mapping = self.map_name(parsed.name)
        labels = {**parsed.tags, **mapping_labels}
        if mapping is None or not mapping.drop:
            if not METRIC_NAME.match(name):
                raise ValueError(f"{parsed.name!r} maps to an invalid metric name {name!r}")
            bad = sorted(k for k in labels if not LABEL_NAME.match(k) or k.startswith("__") or k == "le")
            if bad:
                raise ValueError(f"invalid label names {bad} in {line!r}")
        kind = parsed.kind
        if kind == "observer":
            kind = mapping.observer_type if mapping else self.default_observer
        buckets = mapping.buckets if mapping else self.default_buckets
        return Sample(parsed.name, name, labels, kind, parsed.value, parsed.delta, buckets, mapping)


def _observer(observer_type: str, where: object) -> str:
    if observer_type not in ("histogram", "summary"):
        raise MappingError(f"observer_type must be histogram or summary: {where}")
    return observer_type


def _buckets(options: dict[str, Any]) -> tuple[float, ...]:
    if set(options) - {"buckets"}:
        raise MappingError(f"histogram options the bridge does not implement: {sorted(set(options) - {'buckets'})}")
    buckets = tuple(float(b) for b in options.get("buckets", ()))
    if list(buckets) != sorted(set(buckets)):
        raise MappingError(f"histogram buckets must increase: {buckets}")
    return buckets


@dataclass
class Series:
    """One labelled series: a counter's total, a gauge's value, or an observer's count, sum and buckets."""

    kind: str
    value: float = 0.0
    count: int = 0
    total: float = 0.0
    bucket_counts: list[int] = field(default_factory=list)  # per upper bound, not cumulative

    def observe(self, value: float, buckets: tuple[float, ...]) -> None:
        self.count += 1
        self.total += value
        if self.kind == "histogram":
            if not self.bucket_counts:
                self.bucket_counts = [0] * len(buckets)
            for index, bound in enumerate(buckets):
                if value <= bound:
                    self.bucket_counts[index] += 1
                    break


class StatsdSeries:
    """The series the received lines built, as a prometheus_client collector (thread-safe)."""

    def __init__(self, mapping: StatsdMapping) -> None:
        self.mapping = mapping
        self.series: dict[tuple[str, frozenset[tuple[str, str]]], Series] = {}
        self.shapes: dict[str, tuple[str, frozenset[str], tuple[float, ...]]] = {}  # name: kind, label names
        self.lines: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self._lock = threading.Lock()

    def receive(self, line: str) -> Sample:
        """Apply one line; ValueError if it is malformed, ConflictError if it disagrees with its metric."""
        sample = self.mapping.translate(line)
        if sample.mapping is not None and sample.mapping.drop:
            return sample
        with self._lock:
            shape = (sample.kind, frozenset(sample.labels), sample.buckets)
            known = self.shapes.setdefault(sample.name, shape)
            if known[:2] != shape[:2]:
                raise ConflictError(
                    f"{sample.name} received as {sample.kind} with labels {sorted(shape[1])}, "
                    f"first seen as {known[0]} with labels {sorted(known[1])}"
                )
            series = self.series.setdefault((sample.name, frozenset(sample.labels.items())), Series(sample.kind))
            if sample.kind == "counter":
                series.value += sample.value
            elif sample.kind == "gauge":
                series.value = series.value + sample.value if sample.delta else sample.value
            else:
                series.observe(sample.value, known[2])
        return sample

    def receive_packet(self, packet: bytes) -> None:
        """Every line of one UDP packet; what cannot be read is counted and skipped, never raised."""
        for raw in packet.splitlines():
            if not raw.strip():
                continue
            outcome, error = "exported", ""
            try:
                sample = self.receive(raw.decode("utf-8").strip())
                if sample.mapping is not None and sample.mapping.drop:
                    outcome = "dropped"
            except ConflictError as exc:
                outcome, error = "conflicting", str(exc)
            except (ValueError, UnicodeDecodeError) as exc:
                outcome, error = "malformed", str(exc)
            with self._lock:
                self.lines[outcome] += 1
                count = self.lines[outcome]
            if outcome in ("malformed", "conflicting") and count <= LOGGED_REFUSALS:
                # the first few say what is wrong; after that a flood of bad packets is only counted
                log.warning(f"statsd_line_{outcome}", error=error[:300], count=count)

    def collect(self) -> Iterator[Metric]:
        """The exposition, as the exporter gives it (counters ending in `_total`, histograms with `le`)."""
        with self._lock:
            series = sorted(self.series.items(), key=lambda item: (item[0][0], sorted(item[0][1])))
            shapes = dict(self.shapes)
            lines = dict(self.lines)
        families: dict[str, Metric] = {}
        for (name, label_items), found in series:
            labels = dict(label_items)
            kind, _, buckets = shapes[name]
            family = families.get(name)
            if family is None:
                family = families[name] = _family(name, kind)
            if kind == "counter":
                # a counter's samples end in _total, as the mapping names them; an unmapped counter keeps
                # its bare name (as the exporter exports it), with no type rather than a renamed series
                family.add_sample(name, labels, found.value)
            elif kind == "gauge":
                family.add_sample(name, labels, found.value)
            else:
                if kind == "histogram":
                    cumulative = 0
                    counts = found.bucket_counts or [0] * len(buckets)
                    for bound, in_bucket in zip(buckets, counts, strict=True):
                        cumulative += in_bucket
                        family.add_sample(f"{name}_bucket", {**labels, "le": _le(bound)}, cumulative)
                    family.add_sample(f"{name}_bucket", {**labels, "le": "+Inf"}, found.count)
                family.add_sample(f"{name}_sum", labels, found.total)
                family.add_sample(f"{name}_count", labels, found.count)
        yield from families.values()
        bridge = Metric("co2_statsd_bridge_lines", "StatsD lines received by the bridge, by outcome.", "counter")
        for outcome, count in lines.items():
            bridge.add_sample("co2_statsd_bridge_lines_total", {"outcome": outcome}, count)
        yield bridge


def _family(name: str, kind: str) -> Metric:
    documentation = f"{name} (StatsD, deploy/statsd/mapping.yml)"
    if kind == "counter":
        return Metric(name.removesuffix("_total"), documentation, "counter" if name.endswith("_total") else "unknown")
    return Metric(name, documentation, kind)


def _le(bound: float) -> str:
    """A bucket bound as the exporter (Go's shortest float format) writes it: `1`, `0.5`, `14400`."""
    return str(int(bound)) if bound.is_integer() and abs(bound) < 1e21 else repr(bound)


class StatsdBridge:
    """A UDP listener feeding `StatsdSeries` and an HTTP server exposing them on /metrics, in threads."""

    def __init__(
        self,
        mapping_file: Path,
        host: str = "127.0.0.1",
        port: int = 8125,
        metrics_port: int = 9102,
        log_file: Path | None = None,
    ) -> None:
        from prometheus_client import CollectorRegistry

        self.series = StatsdSeries(StatsdMapping.from_file(mapping_file))
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.series)
        self.host = host
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind((host, port))
        self.port = int(self.socket.getsockname()[1])
        self.metrics_port = metrics_port
        self.log_file = log_file
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._http: Any = None

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def start(self) -> StatsdBridge:
        from prometheus_client import start_http_server

        self._http, http_thread = start_http_server(self.metrics_port, addr=self.host, registry=self.registry)
        self.metrics_port = int(self._http.server_port)
        receiver = threading.Thread(target=self._receive, name="statsd-udp", daemon=True)
        receiver.start()
        self._threads = [http_thread, receiver]
        log.info("statsd_bridge_listening", udp=f"{self.host}:{self.port}", metrics=self.metrics_url)
        return self

    def _receive(self) -> None:
        self.socket.settimeout(0.5)
        lines: IO[str] | None = None
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            lines = self.log_file.open("a", buffering=1)
        try:
            while not self._stop.is_set():
                try:
                    packet = self.socket.recv(65536)
                except TimeoutError:
                    continue
                self.series.receive_packet(packet)
                if lines is not None:  # the raw lines too: what Airflow sent, for reading by eye
                    text = packet.decode(errors="replace")
                    lines.write("".join(f"{line}\n" for line in text.splitlines() if line))
        finally:
            if lines is not None:
                lines.close()

    def serve_forever(self) -> None:
        self.start()
        try:
            while not self._stop.wait(1.0):
                if not all(thread.is_alive() for thread in self._threads):
                    raise RuntimeError("a thread of the StatsD bridge died; see the log above")
        finally:
            self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for thread in self._threads:
            thread.join(5)
        self.socket.close()
