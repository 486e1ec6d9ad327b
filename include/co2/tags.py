"""MLflow tag keys, declared once: what the pipeline writes on runs and versions, and what the registry
listing, `co2 promote`, the next run's discovery and the prediction service read back."""

from __future__ import annotations

PREFIX = "co2."

# --- on each candidate run and on each registered version: which candidate it is
FAMILY_TAG = "co2.family"
WITH_MAKE_TAG = "co2.with_make"
CANDIDATE_TAG = "co2.candidate"

# --- what a version was trained on (its lineage), written by `register`
YEARS_TAG = "co2.years"
SOURCE_URL_TAG = "co2.source_url"
TABLES_TAG = "co2.eea_tables"  # JSON: registration year -> EEA table
TABLES_FROM_TAG = "co2.eea_tables_from"  # metadata, fallback, settings or params
GENERATED_TABLES_TAG = "co2.generated_tables"  # tables the source says it generated (not EEA data)
FINGERPRINT_TAG = "co2.eea_fingerprint"  # tells the next run whether anything is new
RAW_SHA256_TAG = "co2.raw_sha256"
TRAIN_SHA256_TAG = "co2.train_sha256"
TEST_SHA256_TAG = "co2.test_sha256"
VALIDATION_TAG = "co2.validation"
RUN_ID_TAG = "co2.run_id"
# the model code it was built with (co2_model): a loader refuses a version of other code
MODEL_PACKAGE_VERSION_TAG = "co2.model_package_version"
MODEL_CODE_SHA256_TAG = "co2.model_code_sha256"
MODEL_CODE_TAGS = (MODEL_PACKAGE_VERSION_TAG, MODEL_CODE_SHA256_TAG)
LINEAGE_TAGS = (
    YEARS_TAG,
    SOURCE_URL_TAG,
    CANDIDATE_TAG,
    TABLES_TAG,
    TABLES_FROM_TAG,
    GENERATED_TABLES_TAG,
    MODEL_PACKAGE_VERSION_TAG,
)

# --- the metrics it is judged by: `co2.<metric>` for the test split's, with per-year and backtest ones
METRIC_NAMES = ("mae_g_km", "rmse_g_km", "r2")
METRIC_TAGS = tuple(PREFIX + name for name in METRIC_NAMES)
METRIC_TAG_PREFIXES = ("co2.mae_g_km.year.", "co2.backtest_")

# --- why it serves or not: `register`'s decision, and the last move of the alias by hand (`co2 promote`,
# co2.registry), which leaves register's tags as they were
PROMOTED_TAG = "co2.promoted"
DECISION_TAG = "co2.decision"
PROMOTED_BY_TAG = "co2.promoted_by"
PROMOTED_AT_TAG = "co2.promoted_at"
PROMOTION_REASON_TAG = "co2.promotion_reason"
PREVIOUS_PRODUCTION_TAG = "co2.previous_production_version"
