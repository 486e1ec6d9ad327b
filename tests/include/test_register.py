"""register against a real MLflow server: what it decides reads as a sentence, MLflow's own messages stay off stderr.

Airflow shows whatever a task writes to stderr as ERROR lines, and renders boolean fields as nothing.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from structlog.testing import capture_logs

from co2.pipeline.register import decision_sentence, register
from co2.pipeline.results import CompareResult
from co2.settings import Settings
from tests.serving.conftest import log_candidate, sample_splits  # noqa: F401  (sample_splits is a fixture)


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (("1", True, 2.8257, None, None), "promoted version 1: the first production model (MAE 2.826 g/km)"),
        (
            ("3", True, 2.61, "2", 2.82),
            "promoted version 3: better by 0.210 g/km than version 2 (MAE 2.610 vs 2.820 g/km)",
        ),
        (
            ("3", False, 2.83, "2", 2.82),
            "kept version 2 in production: version 3 is not better (MAE 2.830 vs 2.820 g/km)",
        ),
        (
            ("3", False, 2.815, "2", 2.82),
            "kept version 2 in production: version 3 is better by only 0.005 g/km, "
            "less than the 0.01 g/km required (MAE 2.815 vs 2.820 g/km)",
        ),
        (("3", True, 2.83, "2", 2.82), "promoted version 3 (forced) over version 2 (MAE 2.830 vs 2.820 g/km)"),
        (
            ("3", False, 2.83, "2", None),
            "kept version 2 in production: it could not be scored, "
            "and version 3 is not promoted without force_promotion",
        ),
    ],
)
def test_the_decision_reads_as_a_sentence(args: tuple, sentence: str) -> None:  # type: ignore[type-arg]
    assert decision_sentence(*args, min_improvement_g_km=0.01) == sentence


def test_register_logs_its_decision_and_mlflow_messages_as_information(
    mlflow_uri: str,
    sample_splits: tuple[pd.DataFrame, pd.DataFrame],  # noqa: F811
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(mlflow_tracking_uri=mlflow_uri, model_name=f"co2-register-{uuid.uuid4().hex[:8]}")
    model_uri = log_candidate(mlflow_uri, "knn", sample_splits)
    lineage = tmp_path / "lineage.json"
    lineage.write_text(
        json.dumps({"raw_sha256": "ab" * 32, "train": {"sha256": "cd" * 32}, "test": {"sha256": "ef" * 32}})
    )
    winner = {
        "name": "knn_with_make",
        "family": "knn",
        "with_make": True,
        "run_id": "",
        "model_uri": model_uri,
        "mae_g_km": 2.82567153813281,
        "rmse_g_km": 6.52713333,
        "r2": 0.984712345,
    }
    capfd.readouterr()
    with capture_logs() as events:
        first = register(CompareResult(winner, True, "no production model yet", None, None, ""), lineage, settings)
        second = register(
            CompareResult(
                {**winner, "mae_g_km": 2.83},
                False,
                "challenger is not better",
                first.version,
                {"mae_g_km": winner["mae_g_km"]},
                "",
            ),
            lineage,
            settings,
        )
    stderr = capfd.readouterr().err
    for said in ("Successfully registered model", "Created version", "Waiting up to"):
        assert said not in stderr, stderr

    messages = {event["event"]: event for event in events}
    decided = messages["promoted version 1: the first production model (MAE 2.826 g/km)"]
    assert (decided["log_level"], decided["promoted"], decided["mae_g_km"]) == ("info", "yes", 2.826)
    kept = messages["kept version 1 in production: version 2 is not better (MAE 2.830 vs 2.826 g/km)"]
    assert (kept["promoted"], kept["production_version"]) == ("no", "1")
    assert second.decision in messages and second.production_version == "1"
    mlflow_said = [
        e for e in events if "Successfully registered model" in e["event"] or "Created version" in e["event"]
    ]
    assert mlflow_said and {e["log_level"] for e in mlflow_said} == {"info"}

    tags = MlflowClient(mlflow_uri, registry_uri=mlflow_uri).get_model_version(settings.model_name, "1").tags
    assert (tags["co2.mae_g_km"], tags["co2.rmse_g_km"], tags["co2.r2"]) == ("2.826", "6.527", "0.9847")
