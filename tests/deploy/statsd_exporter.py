"""statsd_exporter's translation of StatsD lines, for checking the mapping file against a real Airflow run.

The stack runs the real exporter (prom/statsd-exporter); no package of this machine's registries ships its
binary, so the tests read deploy/statsd/mapping.yml by its documented rules, as implemented for the local
platform's bridge (co2.statsd_bridge), strictly: every line must translate, none may conflict.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from co2.statsd_bridge import Mapping, StatsdMapping, StatsdSeries
from tests.deploy.promql import exposition_series


class StatsdExporter(StatsdSeries):
    """Lines in, Prometheus series out, by the rules of deploy/statsd/mapping.yml; remembers which rule took each."""

    def __init__(self, mapping_file) -> None:  # type: ignore[no-untyped-def]
        super().__init__(StatsdMapping.from_file(mapping_file))
        self.matched: dict[str, str] = {}  # StatsD name -> the `match` of the mapping that took it
        self.dropped: set[str] = set()

    @property
    def mappings(self) -> list[Mapping]:
        return self.mapping.mappings

    def receive(self, line: str):  # type: ignore[no-untyped-def]
        sample = super().receive(line)
        if sample.mapping is not None:
            self.matched[sample.statsd_name] = sample.mapping.match
            if sample.mapping.drop:
                self.dropped.add(sample.statsd_name)
        return sample

    def exposition(self, names: set[str] | None = None) -> str:
        """The /metrics text of the series (those named in `names` only, if given), as the bridge serves it."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Only(self, names))  # type: ignore[arg-type]
        return generate_latest(registry).decode()

    def label_sets(self) -> dict[str, list[dict[str, str]]]:
        """Every exported series name (with _bucket/_sum/_count for observers) and its label sets."""
        series = exposition_series(self.exposition())
        return {name: _unique(sets) for name, sets in series.items() if not name.startswith("co2_statsd_bridge_")}


class _Only:
    """The families of a collector whose exported name (a counter's with its _total) is in `names`."""

    def __init__(self, source: StatsdSeries, names: set[str] | None) -> None:
        self.source, self.names = source, names

    def collect(self) -> Iterator[Metric]:
        for family in self.source.collect():
            exported = f"{family.name}_total" if family.type == "counter" else family.name
            if self.names is None or exported in self.names:
                yield family


def _unique(label_sets: list[dict[str, str]]) -> list[dict[str, str]]:
    seen: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    for labels in label_sets:
        seen.setdefault(tuple(sorted(labels.items())), labels)
    return list(seen.values())
