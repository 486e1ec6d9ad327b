"""What a PromQL expression reads (metric names, label matchers, grouping labels) and what /metrics offers.

Enough of PromQL's lexical grammar for the dashboards' and rules' expressions; Prometheus itself (promtool
and the server) judges whether each expression is valid.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
    "limitk", "limit_ratio",
}  # fmt: skip
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
TOKEN = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    |(?P<range>\[[^\]]*\])
    |(?P<number>(?:\d+(?:\.\d+)?(?:ms|[smhdwy])?)+|0x[0-9a-fA-F]+)
    |(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
    |(?P<brace>\{)
    |(?P<lparen>\()
    |(?P<other>[^\s])
    """,
    re.VERBOSE,
)
MATCHER = re.compile(r"""\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?""")
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value)


@dataclass
class Expression:
    source: str  # where it is: file and panel or alert
    text: str

    @property
    def promql(self) -> str:
        """The expression as Prometheus sees it (Grafana's variables replaced by durations)."""
        text = self.text
        for variable, value in GRAFANA_VARIABLES.items():
            text = text.replace(variable, value)
        return text


def parse(expr: str) -> tuple[list[Selector], set[str]]:
    """The vector selectors of `expr` and the label names its grouping clauses use."""
    selectors: list[Selector] = []
    grouping: set[str] = set()
    tokens = [(m.lastgroup, m.group(), m.end()) for m in TOKEN.finditer(expr)]
    i = 0
    while i < len(tokens):
        kind, text, end = tokens[i]
        following = tokens[i + 1][0] if i + 1 < len(tokens) else None
        if kind == "ident" and text in GROUPING and following == "lparen":
            close = expr.index(")", end)
            grouping |= {label.strip() for label in expr[end:close].split("(", 1)[1].split(",") if label.strip()}
            while i < len(tokens) and tokens[i][2] <= close:
                i += 1
            continue
        if kind == "ident" and text not in KEYWORDS | AGGREGATIONS and following != "lparen":
            matchers: tuple[tuple[str, str, str], ...] = ()
            if following == "brace":
                close = expr.index("}", tokens[i + 1][2])
                matchers = _matchers(expr[tokens[i + 1][2] : close])
                while i < len(tokens) and tokens[i][2] <= close:
                    i += 1
                i -= 1
            selectors.append(Selector(text, matchers))
        elif kind == "brace":
            raise AssertionError(f"a selector without a metric name in {expr!r}: name every metric")
        i += 1
    return selectors, grouping


def _matchers(body: str) -> tuple[tuple[str, str, str], ...]:
    found, position = [], 0
    while position < len(body.strip()):
        match = MATCHER.match(body, position)
        assert match, f"cannot read label matchers {body!r}"
        found.append((match.group(1), match.group(2), match.group(3)))
        position = match.end()
    return tuple(found)


def exposition_series(text: str) -> dict[str, list[dict[str, str]]]:
    """Series names and their label sets in a /metrics text."""
    series: dict[str, list[dict[str, str]]] = defaultdict(list)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head = line.rsplit(" ", 1)[0] if "}" not in line else line[: line.rindex("}") + 1]
        name, _, labels = head.partition("{")
        series[name.strip()].append(dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels)))
    return series


def dashboard_expressions(path: Path) -> list[Expression]:
    """Every target expression of a Grafana dashboard JSON, panels in rows included."""
    found: list[Expression] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                found.append(Expression(f"{path.name}: {panel['title']} [{target['refId']}]", target["expr"]))
            walk(panel.get("panels", []))

    walk(json.loads(path.read_text())["panels"])
    return found


def rule_expressions(path: Path) -> list[Expression]:
    """Every alerting and recording rule expression of a Prometheus rules file."""
    groups = yaml.safe_load(path.read_text())["groups"]
    return [
        Expression(f"{path.name}: {rule.get('alert') or rule.get('record')}", rule["expr"])
        for group in groups
        for rule in group["rules"]
    ]
