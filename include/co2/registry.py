"""The model registry as an operator sees it: `co2 registry` and `co2 promote`.

- `list_versions`: every version of the registered model with its metrics on the test split, what it was
  trained on (years and EEA tables, from the tags `register` writes), register's promotion decision and the
  last move of the production alias by hand. `format_listing` renders it as the table the CLI prints.
- `promote`: points the production alias (and the legacy stage) at another version, earlier (a rollback)
  or later, and records who, when, why and which version it replaced as tags on that version. The
  prediction service follows the alias by polling (serving/registry.py): it serves the version from its
  next poll on. Anything that cannot be done is a `PromotionRefusedError` that says what to fix.
- `registry_summary`: the newest version and production's, as `co2 trigger` and `co2 run` print them.
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from co2.logs import get_logger
from co2.mlflow_utils import current_production, mlflow_client
from co2.settings import Settings
from co2.tags import (
    CANDIDATE_TAG,
    DECISION_TAG,
    METRIC_NAMES,
    PREFIX,
    PREVIOUS_PRODUCTION_TAG,
    PROMOTED_AT_TAG,
    PROMOTED_BY_TAG,
    PROMOTED_TAG,
    PROMOTION_REASON_TAG,
    RAW_SHA256_TAG,
    TABLES_FROM_TAG,
    TABLES_TAG,
    YEARS_TAG,
)

log = get_logger("co2.registry")

NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


class PromotionRefusedError(ValueError):
    """A promotion that cannot be done; the message names what was wrong and how to fix it."""


@dataclass(frozen=True)
class VersionSummary:
    """One registered version as `co2 registry` lists it."""

    version: str
    aliases: list[str]
    registered_at: str  # ISO 8601, UTC
    run_id: str | None
    candidate: str | None
    metrics: dict[str, float]
    years: list[int]
    tables: dict[str, str]  # registration year -> EEA table
    tables_from: str | None  # discovered, fallback, configured, param
    promoted_by_register: bool | None
    decision: str | None  # register's reason for promoting it or not
    promoted_by: str | None = None  # the last `co2 promote` of this version
    promoted_at: str | None = None
    promotion_reason: str | None = None
    previous_production_version: str | None = None

    @classmethod
    def from_version(cls, version: Any) -> VersionSummary:
        tags: dict[str, str] = dict(version.tags or {})
        metrics = {}
        for name in METRIC_NAMES:
            try:
                metrics[name] = float(tags[f"{PREFIX}{name}"])
            except (KeyError, ValueError):
                continue
        try:
            tables = {str(year): str(table) for year, table in json.loads(tags.get(TABLES_TAG, "{}")).items()}
        except (ValueError, AttributeError):
            tables = {}
        promoted = tags.get(PROMOTED_TAG)
        return cls(
            version=str(version.version),
            aliases=sorted(getattr(version, "aliases", None) or []),
            registered_at=_iso(version.creation_timestamp),
            run_id=version.run_id,
            candidate=tags.get(CANDIDATE_TAG),
            metrics=metrics,
            years=sorted(int(year) for year in tags.get(YEARS_TAG, "").split(",") if year.strip().isdigit()),
            tables=dict(sorted(tables.items())),
            tables_from=tags.get(TABLES_FROM_TAG),
            promoted_by_register=None if promoted is None else promoted == "true",
            decision=tags.get(DECISION_TAG),
            promoted_by=tags.get(PROMOTED_BY_TAG),
            promoted_at=tags.get(PROMOTED_AT_TAG),
            promotion_reason=tags.get(PROMOTION_REASON_TAG),
            previous_production_version=tags.get(PREVIOUS_PRODUCTION_TAG),
        )


@dataclass(frozen=True)
class RegistryListing:
    model: str
    tracking_uri: str
    alias: str
    production_version: str | None
    versions: list[VersionSummary] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Promotion:
    """A move of the production alias by hand, as recorded on the version."""

    model: str
    alias: str
    version: str
    previous_version: str | None
    reason: str
    promoted_by: str
    promoted_at: str

    @property
    def rollback(self) -> bool:
        return self.previous_version is not None and int(self.version) < int(self.previous_version)

    def sentence(self) -> str:
        """`co2-emissions@production rolled back from version 3 to version 2 by alice: <reason>`."""
        before = f"version {self.previous_version}" if self.previous_version else "no version"
        moved = "rolled back" if self.rollback else "moved"
        return (
            f"{self.model}@{self.alias} {moved} from {before} to version {self.version} "
            f"by {self.promoted_by}: {self.reason}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rollback": self.rollback}


def list_versions(settings: Settings, limit: int | None = None) -> RegistryListing:
    """Every version, newest first (at most `limit`); RegistryUnavailableError if MLflow does not answer."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(settings, process_default=False)
    try:
        versions = client.search_model_versions(f"name = '{settings.model_name}'", order_by=["version_number DESC"])
    except MlflowException as exc:
        if getattr(exc, "error_code", "") not in NOT_FOUND:
            raise
        versions = []
    production = current_production(client, settings) if versions else None
    production_version = str(production.version) if production is not None else None
    summaries = []
    for version in versions[:limit]:
        summary = VersionSummary.from_version(version)
        if summary.version == production_version:  # searches do not return aliases: ask for production's
            summary = replace(summary, aliases=sorted({*summary.aliases, settings.model_alias}))
        summaries.append(summary)
    return RegistryListing(
        model=settings.model_name,
        tracking_uri=settings.mlflow_tracking_uri,
        alias=settings.model_alias,
        production_version=production_version,
        versions=summaries,
    )


def format_listing(listing: RegistryListing) -> str:
    """The listing as a table: one line per version, then why it serves or not, indented under it."""
    if not listing.versions:
        return (
            f"no version of {listing.model} in the registry at {listing.tracking_uri}; "
            "a successful run of co2_retraining registers one (`co2 trigger`)"
        )
    production = f"version {listing.production_version}" if listing.production_version else "no version"
    lines = [f"{listing.model} at {listing.tracking_uri}: {listing.alias} is {production}", ""]
    header = ("version", "alias", "registered (UTC)", "candidate", "MAE g/km", "RMSE g/km", "R²", "trained on")
    rows = [
        (
            v.version,
            ",".join(v.aliases),
            v.registered_at[:16].replace("T", " "),
            v.candidate or "-",
            _number(v.metrics.get("mae_g_km"), 3),
            _number(v.metrics.get("rmse_g_km"), 3),
            _number(v.metrics.get("r2"), 4),
            _training_window(v),
        )
        for v in listing.versions
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    numeric = {0, 4, 5, 6}

    def line(cells: tuple[str, ...]) -> str:
        fixed = enumerate(zip(cells[:-1], widths, strict=True))
        padded = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in fixed]
        return "  ".join([*padded, cells[-1]]).rstrip()

    lines.append(line(header))
    indent = " " * (widths[0] + 2)
    for version, row in zip(listing.versions, rows, strict=True):
        lines.append(line(row))
        if version.decision is not None:
            outcome = {True: "promoted", False: "not promoted", None: "?"}[version.promoted_by_register]
            lines.append(f"{indent}register: {outcome}: {version.decision}")
        if version.promoted_at:
            over = (
                f"over version {version.previous_production_version}"
                if version.previous_production_version
                else "with none before"
            )
            lines.append(
                f"{indent}co2 promote: by {version.promoted_by} at {version.promoted_at} {over}: "
                f"{version.promotion_reason}"
            )
    return "\n".join(lines)


def promote(settings: Settings, version: str, reason: str = "", *, promoted_by: str | None = None) -> Promotion:
    """Point the production alias at `version` and record the move on it (tags); the service follows.

    Refused (PromotionRefusedError) for a version that does not exist or is already in production;
    RegistryUnavailableError if MLflow does not answer. Register's own tags (its decision) are kept.
    """
    from mlflow.exceptions import MlflowException

    name, alias = settings.model_name, settings.model_alias
    wanted = version.strip().removeprefix("v")
    if not wanted.isdigit() or int(wanted) < 1:
        raise PromotionRefusedError(f"{version!r} is not a version number; `co2 registry` lists those of {name}")
    wanted = str(int(wanted))
    client = mlflow_client(settings, process_default=False)
    try:
        client.get_model_version(name, wanted)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") not in NOT_FOUND:
            raise
        raise PromotionRefusedError(_unknown_version(client, settings, wanted)) from None
    previous = current_production(client, settings)
    previous_version = str(previous.version) if previous is not None else None
    if previous_version == wanted:
        raise PromotionRefusedError(
            f"version {wanted} of {name} is already in {alias}; name another version (`co2 registry` lists them)"
        )
    from co2.pipeline.register import set_legacy_production_stage  # the pipeline's: imported only to promote

    client.set_registered_model_alias(name, alias, wanted)  # the move itself: the service follows from here
    promotion = Promotion(
        model=name,
        alias=alias,
        version=wanted,
        previous_version=previous_version,
        reason=reason.strip() or "no reason given",
        promoted_by=promoted_by or _current_user(),
        promoted_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    set_legacy_production_stage(client, name, wanted)
    for key, value in (
        (PROMOTED_BY_TAG, promotion.promoted_by),
        (PROMOTED_AT_TAG, promotion.promoted_at),
        (PROMOTION_REASON_TAG, promotion.reason[:5000]),
        (PREVIOUS_PRODUCTION_TAG, previous_version or ""),
    ):
        client.set_model_version_tag(name, wanted, key, value)
    log.info(promotion.sentence(), model=name, version=wanted, previous_version=previous_version or "none")
    return promotion


def registry_summary(settings: Settings) -> dict[str, Any]:
    """What a user wants to see after a run: the newest version, production, and why."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(settings, process_default=False)
    try:
        versions = client.search_model_versions(
            f"name = '{settings.model_name}'", order_by=["version_number DESC"], max_results=1
        )
    except MlflowException:
        versions = []
    production = current_production(client, settings) if versions else None

    def describe(version: Any) -> dict[str, Any]:
        tags = version.tags or {}
        return {
            "version": version.version,
            "run_id": version.run_id,
            "candidate": tags.get(CANDIDATE_TAG),
            "mae_g_km": tags.get(f"{PREFIX}mae_g_km"),
            "rmse_g_km": tags.get(f"{PREFIX}rmse_g_km"),
            "r2": tags.get(f"{PREFIX}r2"),
            "promoted": tags.get(PROMOTED_TAG),
            "decision": tags.get(DECISION_TAG),
            "raw_sha256": tags.get(RAW_SHA256_TAG),
        }

    return {
        "model": settings.model_name,
        "tracking_uri": settings.mlflow_tracking_uri,
        "latest_version": describe(versions[0]) if versions else None,
        f"{settings.model_alias}_version": describe(production) if production is not None else None,
    }


def _unknown_version(client: Any, settings: Settings, version: str) -> str:
    """Why `version` cannot be promoted: which versions there are, or that the model has none."""
    from mlflow.exceptions import MlflowException

    try:
        known = sorted(
            int(v.version) for v in client.search_model_versions(f"name = '{settings.model_name}'") if v is not None
        )
    except MlflowException:
        known = []
    if not known:
        return (
            f"no version {version}: the registry at {settings.mlflow_tracking_uri} has no model "
            f"{settings.model_name}; check CO2_MODEL_NAME, or register one with a run of co2_retraining"
        )
    listed = ", ".join(map(str, known)) if len(known) <= 10 else f"{known[0]} to {known[-1]}"
    return f"version {version} of {settings.model_name} does not exist (versions: {listed}); `co2 registry` lists them"


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no user name in the environment nor in the password database
        return f"uid {os.getuid()}"


def _iso(milliseconds: int | None) -> str:
    if not milliseconds:
        return ""
    return datetime.fromtimestamp(milliseconds / 1000, UTC).isoformat(timespec="seconds")


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _training_window(version: VersionSummary) -> str:
    """`2021-2023: co2cars_2021Fv24, ... (discovered)`, from the version's years and tables tags."""
    years = version.years or sorted(int(year) for year in version.tables if year.isdigit())
    span = "" if not years else str(years[0]) if len(years) == 1 else f"{years[0]}-{years[-1]}"
    tables = ", ".join(version.tables.values())
    origin = f" ({version.tables_from})" if version.tables_from else ""
    return ": ".join(part for part in (span, tables) if part) + origin or "-"
