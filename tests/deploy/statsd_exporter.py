"""statsd_exporter's translation of StatsD lines, as its documentation specifies it, for the mapping file.

The stack runs the real exporter (prom/statsd-exporter); no package of this machine's registries ships its
binary, so the tests read deploy/statsd/mapping.yml with these documented rules instead:

- a line is `name[,tag=value...]:value|type[|@rate]`; InfluxDB-style tags become labels;
- glob mappings, in file order, the first match wins; `*` stands for one dot-separated component and
  `$n` / `${n}` in the name and labels for the n-th one; mapping labels win over tags;
- timers (`ms`) are observed in seconds, as histograms or summaries (`observer_type`, else the defaults',
  also for names no mapping matches);
- `action: drop` discards what its glob matches;
- a name no mapping matches is exported with every character outside [a-zA-Z0-9_] turned into `_`.

Only the features the mapping file uses are accepted: anything else in it fails the tests loudly.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MAPPING_KEYS = {"match", "name", "labels", "observer_type", "histogram_options", "action"}
DEFAULT_KEYS = {"observer_type", "histogram_options", "ttl"}
STATSD_TYPES = {"c": "counter", "g": "gauge", "ms": "observer", "h": "observer", "d": "observer"}


@dataclass(frozen=True)
class StatsdLine:
    name: str
    tags: dict[str, str]
    value: float
    kind: str  # counter, gauge, observer
    delta: bool = False

    @classmethod
    def parse(cls, line: str) -> StatsdLine:
        head, sep, rest = line.rpartition(":")
        if not sep or "|" not in rest:
            raise ValueError(f"not a StatsD line: {line!r}")
        name, *tag_parts = head.split(",")
        tags = {}
        for part in tag_parts:
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"bad InfluxDB tag {part!r} in {line!r}")
            tags[key] = value
        value_text, statsd_type, *extras = rest.split("|")
        if statsd_type not in STATSD_TYPES:
            raise ValueError(f"unknown StatsD type {statsd_type!r} in {line!r}")
        rate = 1.0
        for extra in extras:
            if extra.startswith("@"):
                rate = float(extra[1:])
            else:
                raise ValueError(f"unsupported StatsD extension {extra!r} in {line!r}")
        kind = STATSD_TYPES[statsd_type]
        delta = kind == "gauge" and value_text[:1] in "+-"
        value = float(value_text)
        if kind == "counter":
            value /= rate
        if statsd_type == "ms":
            value /= 1000.0
        return cls(name, tags, value, kind, delta)


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


@dataclass
class Series:
    kind: str  # counter, gauge, histogram, summary
    value: float = 0.0
    observations: list[float] = field(default_factory=list)


class StatsdExporter:
    """Lines in, Prometheus series out, by the rules of deploy/statsd/mapping.yml."""

    def __init__(self, mapping_file: Path) -> None:
        config: dict[str, Any] = yaml.safe_load(mapping_file.read_text())
        unknown = set(config) - {"defaults", "mappings"}
        assert not unknown, f"mapping file keys this check does not know: {unknown}"
        defaults = config.get("defaults", {})
        assert set(defaults) <= DEFAULT_KEYS, f"unknown defaults: {set(defaults) - DEFAULT_KEYS}"
        self.default_observer = defaults.get("observer_type", "summary")
        self.default_buckets = tuple(float(b) for b in defaults.get("histogram_options", {}).get("buckets", ()))
        self.mappings = []
        for entry in config["mappings"]:
            assert set(entry) <= MAPPING_KEYS, f"unsupported mapping keys {set(entry) - MAPPING_KEYS} in {entry}"
            assert entry.get("match_type", "glob") == "glob", entry
            assert all(c == "*" or "*" not in c for c in entry["match"].split(".")), entry["match"]
            observer = entry.get("observer_type", defaults.get("observer_type", "summary"))
            options = entry.get("histogram_options", defaults.get("histogram_options", {}))
            assert observer in ("histogram", "summary"), observer
            assert entry.get("action", "map") in ("map", "drop"), entry
            self.mappings.append(
                Mapping(
                    entry["match"],
                    entry["name"],
                    {str(k): str(v) for k, v in (entry.get("labels") or {}).items()},
                    observer,
                    tuple(float(b) for b in options.get("buckets", ())),
                    entry.get("action") == "drop",
                )
            )
        self.series: dict[tuple[str, frozenset[tuple[str, str]]], Series] = {}
        self.buckets: dict[str, tuple[float, ...]] = {}
        self.matched: dict[str, str] = {}  # StatsD name -> the `match` of the mapping that took it
        self.dropped: set[str] = set()

    def map_name(self, statsd_name: str) -> tuple[str, dict[str, str], Mapping | None]:
        for mapping in self.mappings:
            mapped = mapping.apply(statsd_name)
            if mapped is not None:
                return mapped[0], mapped[1], mapping
        return re.sub(r"[^a-zA-Z0-9_]", "_", statsd_name), {}, None

    def receive(self, line: str) -> None:
        sample = StatsdLine.parse(line)
        name, mapping_labels, mapping = self.map_name(sample.name)
        if mapping is not None and mapping.drop:
            self.matched[sample.name] = mapping.match
            self.dropped.add(sample.name)
            return
        assert METRIC_NAME.match(name), f"{sample.name} maps to an invalid metric name {name!r}"
        labels = {**sample.tags, **mapping_labels}
        assert all(LABEL_NAME.match(k) for k in labels), labels
        if mapping is not None:
            self.matched[sample.name] = mapping.match
        kind = sample.kind
        if kind == "observer":
            kind = mapping.observer_type if mapping else self.default_observer
            self.buckets[name] = mapping.buckets if mapping else self.default_buckets
        series = self.series.setdefault((name, frozenset(labels.items())), Series(kind))
        assert series.kind == kind, f"{name} received as {kind} and as {series.kind}"
        if kind == "counter":
            series.value += sample.value
        elif kind == "gauge":
            series.value = series.value + sample.value if sample.delta else sample.value
        else:
            series.observations.append(sample.value)

    def exposition(self, names: set[str] | None = None) -> str:
        """The /metrics text of the series (those named in `names` only, if given)."""
        by_name: dict[str, list[tuple[dict[str, str], Series]]] = defaultdict(list)
        for (name, labels), series in sorted(self.series.items(), key=lambda item: (item[0][0], sorted(item[0][1]))):
            if names is None or name in names:
                by_name[name].append((dict(labels), series))
        lines = []
        for name, members in by_name.items():
            kind = members[0][1].kind
            lines += [f"# HELP {name} {name}", f"# TYPE {name} {kind}"]
            for labels, series in members:
                if kind in ("counter", "gauge"):
                    lines.append(f"{name}{_labels(labels)} {series.value}")
                    continue
                if kind == "histogram":
                    for bound in (*self.buckets[name], float("inf")):
                        count = sum(1 for v in series.observations if v <= bound)
                        le = "+Inf" if bound == float("inf") else repr(bound)
                        lines.append(f"{name}_bucket{_labels({**labels, 'le': le})} {count}")
                lines.append(f"{name}_sum{_labels(labels)} {sum(series.observations)}")
                lines.append(f"{name}_count{_labels(labels)} {len(series.observations)}")
        return "\n".join(lines) + "\n"

    def label_sets(self) -> dict[str, list[dict[str, str]]]:
        """Every exported series name (with _bucket/_sum/_count for observers) and its label sets."""
        result: dict[str, list[dict[str, str]]] = defaultdict(list)
        for (name, labels), series in self.series.items():
            suffixes = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}
            for suffix in suffixes.get(series.kind, ("",)):
                extra = {"le": ""} if suffix == "_bucket" else {}
                if series.kind == "summary" and not suffix:
                    extra = {"quantile": ""}
                result[name + suffix].append({**dict(labels), **extra})
        return result


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
