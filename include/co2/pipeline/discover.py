"""Step 0: choose the EEA tables of this run, and whether there is anything new to train on.

The tables are the newest release of each of the newest registration years (co2.releases). If they
are the very tables, with the same row counts from the same source, that the production model was
trained on (its `co2.eea_fingerprint` tag), a new run would train six candidates only to promote
nothing: the run stops here and says why, unless `force_retrain` (or `force_promotion`) is set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from co2.discodata import DiscodataClient
from co2.logs import get_logger
from co2.mlflow_utils import current_production, mlflow_client
from co2.pipeline.results import DiscoverResult
from co2.releases import Discovery, discover
from co2.settings import Settings
from co2.tags import FINGERPRINT_TAG

log = get_logger("co2.discover")


def discover_step(
    settings: Settings,
    source_url: str | None = None,
    *,
    years: Iterable[int] = (),
    tables: Mapping[int, str] | None = None,
    force: bool = False,
) -> DiscoverResult:
    """The run's tables, and whether to train on them (not if production already was, unless forced)."""
    with DiscodataClient.from_settings(settings, source_url) as client:
        discovery = discover(settings, client, years=years, tables=tables)
    production = current_production(mlflow_client(settings), settings)
    version = str(production.version) if production is not None else None
    trained_on = (production.tags or {}).get(FINGERPRINT_TAG) if production is not None else None
    retrain, reason = decide(discovery, version, trained_on, force)
    log.info(
        reason,
        retrain="yes" if retrain else "no",
        tables=",".join(discovery.tables.values()),
        tables_from=discovery.tables_from,
        fingerprint=discovery.fingerprint(),
        production_version=version or "none",
    )
    return DiscoverResult(discovery.to_dict(), retrain, reason, version, source_url or settings.discodata_url)


def decide(
    discovery: Discovery, production_version: str | None, trained_on: str | None, force: bool
) -> tuple[bool, str]:
    """Train or not, with the sentence a person reads in the task log and in `co2 trigger`."""
    tables = ", ".join(discovery.tables.values())
    if production_version is None:
        return True, f"training on {tables}: no production model yet"
    if trained_on != discovery.fingerprint():
        return True, f"training on {tables}: new data since production version {production_version}"
    if force:
        return True, f"training on {tables} again (forced): production version {production_version} was trained on them"
    return False, (
        f"nothing new: production version {production_version} was trained on {tables} with the same row counts; "
        "nothing to train (trigger with force_retrain to train anyway)"
    )
