"""Step 2: check a raw snapshot against the declared schema before anything learns from it.

Every check is recorded in a report; when one fails, the step raises with the name and the
numbers of each failing check, and nothing downstream runs. Range checks allow a small share of
impossible rows (the real data has a few typos, which preprocessing removes); beyond that share
the source is broken and a human should look.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from co2.files import new_directory, utc_stamp, write_json
from co2.logs import get_logger
from co2.pipeline.results import ValidationResult
from co2_model import columns as col
from co2_model.inputs import MEASURED, MEASURED_INPUTS
from co2_model.vocabulary import FUEL_TYPES

log = get_logger("co2.validate")

# the EEA's fuel types (co2_model.vocabulary), compared upper case as the raw data spells them
KNOWN_FUEL_TYPES = frozenset(fuel_type.upper() for fuel_type in FUEL_TYPES)


@dataclass(frozen=True)
class ColumnRule:
    """What one source column must look like."""

    name: str
    kind: str  # "number" | "text" | "integer"
    max_null_fraction: float = 1.0
    minimum: float | None = None
    maximum: float | None = None


def _measured(name: str, max_null_fraction: float) -> ColumnRule:
    """The rule of a measured model input: its EEA column and physical range as co2_model.inputs declares them."""
    declared = MEASURED[name]
    return ColumnRule(declared.eea_column, "number", max_null_fraction, declared.minimum, declared.maximum)


# Physical limits: values outside them are impossible, not merely unusual.
SCHEMA: tuple[ColumnRule, ...] = (
    ColumnRule("Year", "integer", 0.0, 2010, 2100),
    ColumnRule("MS", "text", 0.0),
    ColumnRule("Mk", "text", 0.02),
    ColumnRule("Ft", "text", 0.0),
    ColumnRule("Fm", "text", 0.05),
    _measured("mass_kg", 0.02),
    _measured("engine_capacity_cm3", 0.6),
    _measured("engine_power_kw", 0.2),
    _measured("eco_innovation_savings_g_km", 1.0),
    _measured("fuel_consumption_l_100km", 0.9),
    ColumnRule("Ewltp (g/km)", "number", 0.0, 0, 800),
    ColumnRule(col.COUNT_ALIAS, "integer", 0.0, 1, None),
)
OPTIONAL_RULES: tuple[ColumnRule, ...] = tuple(
    _measured(declared.name, 1.0) for declared in MEASURED_INPUTS if not declared.in_every_table
)


@dataclass
class Check:
    name: str
    passed: bool
    observed: float | int | str
    limit: float | int | str
    detail: str = ""


class DataValidationError(ValueError):
    """The snapshot breaks the schema; the message lists each failing check with its numbers."""

    def __init__(self, message: str, failures: int, report_path: str) -> None:
        super().__init__(message)
        self.failures = failures
        self.report_path = report_path


def check_frame(raw: pd.DataFrame, *, min_rows: int, max_out_of_range_fraction: float) -> list[Check]:
    """Run every declared check on a raw snapshot; pure, so tests can call it on any frame."""
    checks = [Check("min_rows", len(raw) >= min_rows, len(raw), min_rows, "configurations in the snapshot")]
    for rule in SCHEMA:
        if rule.name not in raw.columns:
            checks.append(
                Check(f"column_present[{rule.name}]", False, "missing", "present", _missing_hint(rule.name, raw))
            )
            continue
        checks.extend(_column_checks(raw[rule.name], rule, max_out_of_range_fraction))
    for rule in OPTIONAL_RULES:
        if rule.name in raw.columns:
            checks.extend(_column_checks(raw[rule.name], rule, max_out_of_range_fraction))
    if "Ft" in raw.columns:
        fuel = raw["Ft"].dropna().astype(str).str.strip().str.upper()
        unknown = sorted(set(fuel.unique()) - KNOWN_FUEL_TYPES)
        checks.append(
            Check(
                "allowed_values[Ft]",
                not unknown,
                ", ".join(unknown) or "none",
                "EEA fuel types in either case",
                "fuel types outside the EEA vocabulary",
            )
        )
    return checks


def validate(
    snapshot_path: Path, reports_dir: Path, *, min_rows: int, max_out_of_range_fraction: float = 0.001
) -> ValidationResult:
    """Check the snapshot, write the report, and raise `DataValidationError` if any check failed."""
    raw = pd.read_parquet(snapshot_path)
    checks = check_frame(raw, min_rows=min_rows, max_out_of_range_fraction=max_out_of_range_fraction)
    failed = [c for c in checks if not c.passed]
    report_dir = new_directory(reports_dir / snapshot_path.parent.name, f"validation_{utc_stamp()}")
    report_path = report_dir / "validation.json"
    write_json(
        {
            "kind": "validation_report",
            "snapshot": str(snapshot_path),
            "checked_at": datetime.now(UTC).isoformat(),
            "passed": not failed,
            "rows": len(raw),
            "checks": [asdict(c) for c in checks],
        },
        report_path,
    )
    log.info(
        "validation_finished", passed=not failed, checks=len(checks), failures=len(failed), report=str(report_path)
    )
    if failed:
        lines = "\n".join(f"  - {c.name}: observed {c.observed}, limit {c.limit} ({c.detail})" for c in failed)
        raise DataValidationError(
            f"raw snapshot {snapshot_path} failed {len(failed)} of {len(checks)} checks:\n{lines}\n"
            f"Full report: {report_path}. Nothing downstream ran; fix the source or the table settings and re-run.",
            len(failed),
            str(report_path),
        )
    return ValidationResult(True, str(report_path), len(raw), 0, str(snapshot_path))


def _column_checks(series: pd.Series, rule: ColumnRule, max_out_of_range_fraction: float) -> list[Check]:
    name = rule.name
    checks: list[Check] = []
    if rule.kind == "text":
        ok = pd.api.types.is_string_dtype(series) or pd.api.types.is_object_dtype(series)
    elif rule.kind == "integer":
        ok = pd.api.types.is_integer_dtype(series)
    else:
        ok = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    checks.append(Check(f"dtype[{name}]", ok, str(series.dtype), rule.kind, "column type"))
    null_fraction = float(series.isna().mean()) if len(series) else 0.0
    checks.append(
        Check(
            f"null_rate[{name}]",
            null_fraction <= rule.max_null_fraction,
            round(null_fraction, 4),
            rule.max_null_fraction,
            "share of rows without a value",
        )
    )
    if ok and rule.kind != "text" and (rule.minimum is not None or rule.maximum is not None):
        values = series.dropna()
        low = values < rule.minimum if rule.minimum is not None else pd.Series(False, index=values.index)
        high = values > rule.maximum if rule.maximum is not None else pd.Series(False, index=values.index)
        outside = int((low | high).sum())
        share = outside / len(series) if len(series) else 0.0
        checks.append(
            Check(
                f"range[{name}]",
                share <= max_out_of_range_fraction,
                f"{outside} rows ({share:.2%}) outside, min {values.min() if len(values) else 'n/a'}, "
                f"max {values.max() if len(values) else 'n/a'}",
                f"[{rule.minimum}, {rule.maximum}] for all but {max_out_of_range_fraction:.2%} of rows",
                "physically possible values",
            )
        )
    return checks


def _missing_hint(name: str, raw: pd.DataFrame) -> str:
    """Name the unexpected column that looks most like the missing one."""
    expected = {rule.name for rule in (*SCHEMA, *OPTIONAL_RULES)}
    unexpected = [str(c) for c in raw.columns if c not in expected]
    similar = difflib.get_close_matches(name, unexpected, n=1, cutoff=0.4)
    hint = f"; found '{similar[0]}' instead, was it renamed?" if similar else ""
    return f"required column is absent{hint}"
