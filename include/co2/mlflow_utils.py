"""MLflow plumbing shared by the pipeline and the prediction service."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from co2 import http_client
from co2.settings import Settings
from co2.tags import MODEL_CODE_SHA256_TAG, MODEL_PACKAGE_VERSION_TAG
from co2.training_summary import METADATA_KEY, TrainingSummary
from co2_model import code as model_code
from co2_model import columns as col

# Beyond the types skops trusts by default, the ones our three model families contain: nothing
# else is serialized, and nothing else is deserialized, whatever a version's own MLmodel lists.
# A library upgrade that moves one of them fails loudly at logging, naming the type to review.
TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "co2_model.model.CarFeatures",
        "co2_model.model.WltpCo2Regressor",
        "numpy.dtype",
        "sklearn.tree._tree.Tree",  # random forest
        "scipy.interpolate._bsplines.BSpline",  # linear family's splines
        "scipy._lib.array_api_compat.numpy._aliases.asarray",
    }
)
# For the prediction service's process: MLflow's own loaders deserialize whatever a version's
# MLmodel says (pickle included); the service loads through `load_trusted_model` only.
NO_PICKLE_ENV = {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}


class RegistryUnavailableError(RuntimeError):
    """The MLflow tracking server cannot be reached."""


class UntrustedModelError(ValueError):
    """A registered version the platform refuses to deserialize; the message is short and safe to show."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.detail = detail  # for the log only: it can quote what the version's files say


class OtherModelCodeError(UntrustedModelError):
    """A version built by other model code than the installed co2_model: its classes may not match."""


# In the MLmodel's metadata: the model package a version was built with (co2_model.code).
MODEL_CODE_KEY = "co2_model"


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
            http_client.shared().get(f"{uri.rstrip('/')}/health", timeout=10.0).raise_for_status()
        except httpx.HTTPError as exc:
            raise RegistryUnavailableError(
                f"MLflow at {uri} does not answer ({exc}); start it or fix MLFLOW_TRACKING_URI"
            ) from None
    if process_default:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def model_signature() -> Any:
    """Every input is optional but the fuel type; per car, WLTP CO2 with its interval and method.

    The measured inputs are declared `any`: MLflow refuses int64 columns for a `double` (a CSV
    read with pandas has them), and the model reads every number as float64 itself.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    from co2_model.model import OUTPUT_COLUMNS

    inputs: list[Any] = [ColSpec(AnyType(), name, required=False) for name in col.NUMERIC_FEATURES]
    inputs.append(ColSpec("string", col.FUEL_TYPE))
    inputs += [ColSpec("string", name, required=False) for name in ("fuel_mode", col.MAKE)]
    outputs: list[Any] = [ColSpec("double", name) for name in OUTPUT_COLUMNS[:-1]]
    outputs.append(ColSpec("string", OUTPUT_COLUMNS[-1]))
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def trusted_types(model: Any) -> list[str]:
    """The types skops must be told to trust for this model; anything unexpected is an error."""
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    unexpected = sorted(set(untrusted) - TRUSTED_TYPES)
    if unexpected:
        raise TypeError(
            f"model contains types outside co2.mlflow_utils.TRUSTED_TYPES: {', '.join(unexpected)}; "
            "add them there only once each is known to be safe to deserialize"
        )
    return list(untrusted)


def load_trusted_model(model_dir: str | Path) -> Any:
    """The scikit-learn model of a downloaded version, deserialized only if it is skops with trusted types.

    The version's own MLmodel is not trusted: `mlflow.sklearn.load_model` follows its serialization
    format (pickle runs code from the file) and its list of types to trust. Here the format must be
    skops, and every type of the file that skops does not trust by default must be in TRUSTED_TYPES.
    """
    import skops.io
    import yaml

    root = Path(model_dir).resolve()
    try:
        mlmodel = yaml.safe_load((root / "MLmodel").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UntrustedModelError("its MLmodel is missing or not YAML", str(exc)) from None
    flavors = mlmodel.get("flavors") if isinstance(mlmodel, dict) else None
    flavor = flavors.get("sklearn") if isinstance(flavors, dict) else None
    if not isinstance(flavor, dict):
        raise UntrustedModelError("its MLmodel has no sklearn flavor")
    if flavor.get("serialization_format") != "skops":
        raise UntrustedModelError(
            "its MLmodel is not a skops model", f"serialization_format: {flavor.get('serialization_format')!r}"
        )
    listed = flavor.get("skops_trusted_types") or []
    beyond = sorted(set(map(str, listed)) - TRUSTED_TYPES) if isinstance(listed, list) else [repr(listed)]
    if beyond:
        raise UntrustedModelError("its MLmodel trusts types outside the platform's list", ", ".join(beyond))
    _check_model_code(root, mlmodel)
    model_file = (root / str(flavor.get("pickled_model", ""))).resolve()
    if not model_file.is_relative_to(root) or not model_file.is_file():
        raise UntrustedModelError("its model file is missing", str(flavor.get("pickled_model")))
    try:
        found = skops.io.get_untrusted_types(file=model_file)  # reads the file's schema, runs nothing
    except Exception as exc:
        raise UntrustedModelError("its model file is not a readable skops file", repr(exc)) from None
    beyond = sorted(set(found) - TRUSTED_TYPES)
    if beyond:
        raise UntrustedModelError("its model file holds types outside the platform's list", ", ".join(beyond))
    return skops.io.load(model_file, trusted=sorted(TRUSTED_TYPES))


def _check_model_code(root: Path, mlmodel: dict[str, Any]) -> None:
    """Refuse a version whose stored co2_model is not the installed one (compared by digest, read as text)."""
    pyfunc = (mlmodel.get("flavors") or {}).get("python_function") or {}
    code_dir = (root / str(pyfunc.get("code") or "code") / model_code.PACKAGE_NAME).resolve()
    installed = f"co2_model {co2_model_version()}"
    if not code_dir.is_relative_to(root) or not code_dir.is_dir():
        raise OtherModelCodeError(
            f"it was built without the co2_model package (by an older platform); this platform runs {installed}: "
            "retrain it (trigger co2_retraining with force_retrain)"
        )
    stored = model_code.stored_version(code_dir) or "unknown"
    try:
        same = model_code.code_digest(code_dir) == model_code.code_digest()
    except (OSError, ValueError) as exc:
        raise UntrustedModelError("its stored co2_model code cannot be read", repr(exc)) from None
    if not same:
        raise OtherModelCodeError(
            f"it was built with co2_model {stored}, other code than this platform's {installed}: retrain it "
            f"(trigger co2_retraining with force_retrain), or serve it with co2-model=={stored} installed"
        )


def co2_model_version() -> str:
    import co2_model

    return co2_model.__version__


def model_code_tags() -> dict[str, str]:
    """What a version records of the model code it was built with, in its MLmodel metadata."""
    return {"version": co2_model_version(), "code_sha256": model_code.code_digest()}


def model_code_run_tags() -> dict[str, str]:
    """The same, as the tags of a candidate's run (register copies them to the version)."""
    code = model_code_tags()
    return {MODEL_PACKAGE_VERSION_TAG: code["version"], MODEL_CODE_SHA256_TAG: code["code_sha256"]}


def pip_requirements() -> list[str]:
    """Pinned from this environment, so a model loads with the scikit-learn it was trained with."""
    from importlib.metadata import version

    return [
        f"{package}=={version(package)}" for package in ("scikit-learn", "pandas", "numpy", "skops", "mlflow-skinny")
    ]


def log_model(model: Any, input_example: pd.DataFrame, training_summary: TrainingSummary | None = None) -> str:
    """Log a fitted model in the active run with signature, input example and its code (the co2_model
    package alone), and in the MLmodel's metadata that code's version and digest and the summary of
    its training cars (co2.training_summary)."""
    import mlflow.sklearn

    metadata: dict[str, Any] = {MODEL_CODE_KEY: model_code_tags()}
    if training_summary is not None:
        metadata[METADATA_KEY] = training_summary.model_dump()
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        signature=model_signature(),
        input_example=input_example,
        code_paths=[str(model_code.PACKAGE_DIR)],
        pip_requirements=pip_requirements(),
        serialization_format="skops",
        skops_trusted_types=trusted_types(model),
        metadata=metadata,
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
