"""The registry is a trust boundary: a version's own MLmodel does not decide how it is deserialized.

A version whose files were edited in the artifact store (pickle instead of skops, or more types to
trust) is refused by the service and by the pipeline's compare step before anything of it runs.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import httpx
import mlflow
import mlflow.artifacts
import numpy as np
import pandas as pd
import pytest
import skops.io
import yaml
from mlflow import MlflowClient
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import co2_model
from co2.files import write_json
from co2.local import ManagedProcess
from co2.mlflow_utils import MODEL_CODE_KEY, OtherModelCodeError, UntrustedModelError, load_trusted_model
from co2.pipeline.compare import compare
from co2.pipeline.results import Candidate, CompareResult
from co2.settings import Settings
from co2_model import columns as col
from co2_model.code import code_digest
from co2_model.model import input_columns, predict_columns
from tests.serving.conftest import metric_value, promote, ready_version, running_service, wait_for


class CreatesMarker:
    """What an attacker's pickle does when loaded: here, create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def artifact_root(mlflow_server: ManagedProcess) -> Path:
    """The test server's artifact store, a local folder (its --artifacts-destination)."""
    arguments = list(mlflow_server.process.args)  # type: ignore[arg-type]
    return Path(arguments[arguments.index("--artifacts-destination") + 1])


def register_copy(uri: str, name: str, model_uri: str, tmp_path: Path) -> tuple[str, str]:
    """A new version with the files of an existing real model; its number and storage location."""
    copy = str(tmp_path / "copy")
    files = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=copy, tracking_uri=uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(files, "model")
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
    location = MlflowClient(uri, registry_uri=uri).get_model_version_download_uri(name, version.version)
    return str(version.version), location


def tamper_to_pickle(model_dir: Path, marker: Path) -> None:
    """Edit a model's MLmodel to say `pickle`, next to a pickle that creates `marker` when loaded."""
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    mlmodel["flavors"]["sklearn"].update(serialization_format="pickle", pickled_model="model.pkl")
    mlmodel["flavors"]["python_function"]["model_path"] = "model.pkl"
    (model_dir / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    (model_dir / "model.pkl").write_bytes(pickle.dumps(CreatesMarker(marker)))


def compare_against_production(uri: str, name: str, test: pd.DataFrame, tmp_path: Path) -> CompareResult:
    """The pipeline's compare step, a challenger of MAE 3 g/km against the model's production version."""
    test_path = tmp_path / "test.parquet"
    test.to_parquet(test_path)
    (tmp_path / "run").mkdir()
    write_json({"test": {"path": str(test_path)}}, tmp_path / "run" / "lineage.json")
    settings = Settings(mlflow_tracking_uri=uri, model_name=name, data_dir=tmp_path / "data")
    candidate = Candidate("knn", True, "", "", mae_g_km=3.0, rmse_g_km=5.0, r2=0.95, train_seconds=1.0)
    return compare([candidate], tmp_path / "run" / "lineage.json", settings)


def test_a_version_edited_to_pickle_is_refused_before_it_runs(  # type: ignore[no-untyped-def]
    service_settings: Settings, model_uris, mlflow_server: ManagedProcess, tmp_path: Path
) -> None:
    uri, name = service_settings.mlflow_tracking_uri, service_settings.model_name
    good = promote(uri, name, model_uris["knn"])
    with running_service(service_settings) as url:
        wait_for(lambda: ready_version(url) == good, 30)
        failures_before = metric_value(url, "co2_model_load_failures_total")
        version, location = register_copy(uri, name, model_uris["knn"], tmp_path)
        marker = tmp_path / "payload-ran"
        tamper_to_pickle(artifact_root(mlflow_server) / location.removeprefix("mlflow-artifacts:/"), marker)
        MlflowClient(uri, registry_uri=uri).set_registered_model_alias(name, "production", version)
        refused = f"version {version} refused: its MLmodel is not a skops model; see the service log"
        wait_for(lambda: httpx.get(f"{url}/ready").json()["last_error"] == refused, 20)
        assert not marker.exists()
        response = httpx.post(f"{url}/predict", json={"fuel_type": "PETROL", "mass_kg": 1300})
        assert response.status_code == 200 and response.headers["X-Model-Version"] == good
        assert metric_value(url, "co2_model_load_failures_total") == failures_before + 1
        assert httpx.get(f"{url}/ready").json()["model_version"] == good


def test_compare_does_not_run_a_tampered_production_model(  # type: ignore[no-untyped-def]
    mlflow_uri: str, model_uris, sample_splits, mlflow_server: ManagedProcess, model_name: str, tmp_path: Path
) -> None:
    version, location = register_copy(mlflow_uri, model_name, model_uris["knn"], tmp_path)
    marker = tmp_path / "payload-ran"
    tamper_to_pickle(artifact_root(mlflow_server) / location.removeprefix("mlflow-artifacts:/"), marker)
    MlflowClient(mlflow_uri, registry_uri=mlflow_uri).set_registered_model_alias(model_name, "production", version)
    result = compare_against_production(mlflow_uri, model_name, sample_splits[1], tmp_path)
    assert not marker.exists()
    assert result.champion_version == version and result.champion_metrics is None
    assert result.promote is False and "not a skops model" in result.reason


@pytest.fixture
def model_dir(mlflow_uri: str, model_uris, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """A real logged model's files, as the service downloads them."""
    uri = model_uris["linear_regression"]
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path), tracking_uri=mlflow_uri))


def test_the_trusted_types_are_the_platforms_not_the_files(model_dir: Path, sample_splits) -> None:  # type: ignore[no-untyped-def]
    cars = sample_splits[1][col.MODEL_INPUT_COLUMNS].head(50)
    records = [{k: v for k, v in row.items() if pd.notna(v)} for row in cars.to_dict(orient="records")]
    loaded = load_trusted_model(model_dir)
    assert np.isfinite(predict_columns(loaded, input_columns(records))).any()

    # the MLmodel asks to trust a function that runs commands: refused, whatever the file holds
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    listed = mlmodel["flavors"]["sklearn"]["skops_trusted_types"]
    mlmodel["flavors"]["sklearn"]["skops_trusted_types"] = [*listed, "posix.system"]
    (model_dir / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(UntrustedModelError, match="trusts types outside the platform's list"):
        load_trusted_model(model_dir)

    # the MLmodel is left as it was, the model file holds such a function: refused too
    mlmodel["flavors"]["sklearn"]["skops_trusted_types"] = listed
    (model_dir / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    model_file = model_dir / mlmodel["flavors"]["sklearn"]["pickled_model"]
    shutil.copy(model_file, model_dir / "original.skops")
    skops.io.dump(make_pipeline(FunctionTransformer(os.system)), model_file)
    with pytest.raises(UntrustedModelError, match="model file holds types outside the platform's list") as refused:
        load_trusted_model(model_dir)
    assert "posix.system" in refused.value.detail and "posix.system" not in str(refused.value)


def as_other_model_code(model_dir: Path, version: str) -> None:
    """Edit the co2_model stored with a version: another version number, one module changed."""
    stored = model_dir / "code" / "co2_model"
    init = stored / "__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{co2_model.__version__}"', f'__version__ = "{version}"'))
    engine = stored / "engine.py"
    engine.write_text(engine.read_text() + "\nPARALLEL_MIN_ROWS = 1\n")


def test_a_version_ships_the_model_package_alone(model_dir: Path) -> None:
    code = model_dir / "code"
    assert [path.name for path in code.iterdir()] == ["co2_model"]  # not the platform (cli, emulator, stack...)
    shipped = sorted(path.relative_to(code / "co2_model").as_posix() for path in code.rglob("*.py"))
    installed = Path(co2_model.__file__).parent
    assert shipped == sorted(path.relative_to(installed).as_posix() for path in installed.rglob("*.py"))
    assert not any("import co2." in p.read_text() or "from co2 " in p.read_text() for p in code.rglob("*.py"))
    metadata = yaml.safe_load((model_dir / "MLmodel").read_text())["metadata"][MODEL_CODE_KEY]
    assert metadata == {"version": co2_model.__version__, "code_sha256": code_digest()}
    load_trusted_model(model_dir)

    as_other_model_code(model_dir, "0.9.0")
    with pytest.raises(OtherModelCodeError, match=r"built with co2_model 0\.9\.0, other code than this platform's"):
        load_trusted_model(model_dir)
    shutil.rmtree(model_dir / "code" / "co2_model")
    with pytest.raises(OtherModelCodeError, match="built without the co2_model package"):
        load_trusted_model(model_dir)


def test_a_version_of_other_model_code_is_refused_by_the_service_and_replaced_by_compare(  # type: ignore[no-untyped-def]
    service_settings: Settings, model_uris, sample_splits, mlflow_server: ManagedProcess, tmp_path: Path
) -> None:
    uri, name = service_settings.mlflow_tracking_uri, service_settings.model_name
    good = promote(uri, name, model_uris["knn"])
    with running_service(service_settings) as url:
        wait_for(lambda: ready_version(url) == good, 30)
        version, location = register_copy(uri, name, model_uris["knn"], tmp_path)
        as_other_model_code(artifact_root(mlflow_server) / location.removeprefix("mlflow-artifacts:/"), "0.9.0")
        MlflowClient(uri, registry_uri=uri).set_registered_model_alias(name, "production", version)
        wait_for(
            lambda: (
                f"version {version} refused: it was built with co2_model 0.9.0"
                in str(httpx.get(f"{url}/ready").json()["last_error"])
            ),
            20,
        )
        assert httpx.get(f"{url}/ready").json()["model_version"] == good

    result = compare_against_production(uri, name, sample_splits[1], tmp_path)
    assert result.champion_version == version and result.champion_metrics is None
    assert result.promote is True
    assert result.reason.startswith("this platform cannot load the production model (it was built with co2_model 0.9.0")
