"""The model is its own package: it imports nothing of the platform and builds a wheel of its own."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import co2_model
from co2_model.code import PACKAGE_DIR, code_digest, stored_version

PROJECT_DIR = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_model_package_imports_nothing_of_the_platform() -> None:
    allowed = {"co2_model", "numpy", "pandas", "sklearn", "__future__"}
    for path in PACKAGE_DIR.rglob("*.py"):
        roots = {name.split(".")[0] for name in imported_modules(path)}
        outside = {root for root in roots - allowed if root not in sys.stdlib_module_names}
        assert not outside, f"{path.name} imports {outside}"


def test_the_model_package_builds_a_wheel_of_its_own(tmp_path: Path) -> None:
    uv = os.environ.get("UV") or shutil.which("uv")
    command = [uv] if uv else [sys.executable, "-m", "uv"]
    result = subprocess.run(
        [*command, "build", "--wheel", "--package", "co2-model", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=PROJECT_DIR,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("co2_model-*.whl")
    assert wheel.name.startswith(f"co2_model-{co2_model.__version__}-")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
        archive.extractall(tmp_path / "unpacked")
    assert {name.split("/")[0] for name in names} == {"co2_model", f"co2_model-{co2_model.__version__}.dist-info"}
    requires = sorted(line.split()[1] for line in metadata.splitlines() if line.startswith("Requires-Dist:"))
    assert [name.split("=")[0].split(">")[0] for name in requires] == ["numpy", "pandas", "scikit-learn"]
    # installed from the wheel, the package has the same code: model versions built here load there
    assert code_digest(tmp_path / "unpacked" / "co2_model") == code_digest()


def test_the_code_digest_changes_with_any_source_and_the_version_is_read_as_text(tmp_path: Path) -> None:
    copy = tmp_path / "co2_model"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_digest(copy) == code_digest()
    assert stored_version(copy) == co2_model.__version__
    (copy / "__pycache__").mkdir()
    (copy / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0")  # caches do not count
    assert code_digest(copy) == code_digest()
    (copy / "engine.py").write_text((copy / "engine.py").read_text() + "\n")
    assert code_digest(copy) != code_digest()
    (copy / "__init__.py").write_text('import os\nos.system("false")\n__version__ = "9.9"\n')
    assert stored_version(copy) == "9.9"  # never imported
