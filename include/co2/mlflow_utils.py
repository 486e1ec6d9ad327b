"""MLflow plumbing shared by the pipeline and the prediction service."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from co2 import columns as col
from co2.settings import Settings

# skops refuses to load types it does not know; these are the ones our pipelines contain.
TRUSTED_TYPE_PREFIXES = ("co2.", "sklearn.", "numpy.", "scipy.", "builtins.")


class RegistryUnavailableError(RuntimeError):
    """The MLflow tracking server cannot be reached."""


def download_version(client: Any, tracking_uri: str, name: str, version: str, dst_path: str) -> str:
    """The files of one registered version, from this server only.

    `models:/` URIs resolve through MLflow's process-wide registry URI whatever the arguments
    say, so the version's storage location is asked of `client` and fetched from `tracking_uri`.
    """
    import mlflow.artifacts

    location = client.get_model_version_download_uri(name, version)
    return str(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=dst_path, tracking_uri=tracking_uri))


def mlflow_client(settings: Settings, process_default: bool = True) -> Any:
    """An MlflowClient on the configured server, after checking that the server answers.

    `process_default` also makes it the server of MLflow's module-level API (`mlflow.start_run`,
    `models:/` URIs), as the pipeline's steps need; the prediction service keeps to its client.
    """
    import mlflow
    from mlflow import MlflowClient

    uri = settings.mlflow_tracking_uri
    if uri.startswith("http"):
        try:
            httpx.get(f"{uri.rstrip('/')}/health", timeout=10.0).raise_for_status()
        except httpx.HTTPError as exc:
            raise RegistryUnavailableError(
                f"MLflow at {uri} does not answer ({exc}); start it or fix MLFLOW_TRACKING_URI"
            ) from None
    if process_default:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def model_signature() -> Any:
    """Every input is optional but the fuel type; the output is WLTP CO2 in g/km."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs: list[Any] = [ColSpec("double", name, required=False) for name in col.NUMERIC_FEATURES]
    inputs.append(ColSpec("string", col.FUEL_TYPE))
    inputs += [ColSpec("string", name, required=False) for name in ("fuel_mode", col.MAKE)]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("double", col.TARGET)]))


def trusted_types(model: Any) -> list[str]:
    """The types skops must be told to trust for this model; anything unexpected is an error."""
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    unexpected = [t for t in untrusted if not t.startswith(TRUSTED_TYPE_PREFIXES)]
    if unexpected:
        raise TypeError(f"model contains types outside the trusted packages: {', '.join(unexpected)}")
    return list(untrusted)


def pip_requirements() -> list[str]:
    """Pinned from this environment, so a model loads with the scikit-learn it was trained with."""
    from importlib.metadata import version

    return [
        f"{package}=={version(package)}" for package in ("scikit-learn", "pandas", "numpy", "skops", "mlflow-skinny")
    ]


def log_model(model: Any, input_example: pd.DataFrame) -> str:
    """Log a fitted model in the active run with signature, input example and its own code."""
    import mlflow.sklearn

    import co2

    info = mlflow.sklearn.log_model(
        model,
        name="model",
        signature=model_signature(),
        input_example=input_example,
        code_paths=[str(Path(co2.__file__).parent)],
        pip_requirements=pip_requirements(),
        serialization_format="skops",
        skops_trusted_types=trusted_types(model),
    )
    return str(info.model_uri)


def current_production(client: Any, settings: Settings) -> Any | None:
    """The version the production alias points to; else the newest in the legacy stage; else None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(settings.model_name, settings.model_alias)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated; read for old writers
            staged = client.get_latest_versions(settings.model_name, stages=["Production"])
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return None
        raise
    return staged[0] if staged else None
