"""Which code a model version was built with: this package's version and a digest of its source.

A model version carries this package as its code (MLflow `code_paths`); its loader compares the
stored code's digest with the installed package's and refuses a version built by other code, so
the classes a version was fitted with are the ones that run it, and nothing from the registry is
imported.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import co2_model

PACKAGE_DIR = Path(co2_model.__file__).resolve().parent
PACKAGE_NAME = PACKAGE_DIR.name
# Read back from a version's files: a digest needs the sources, nothing more (and a bounded amount).
MAX_SOURCE_BYTES = 4 * 1024 * 1024


def code_digest(package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 over the package's Python sources: each file's path (relative, '/'-separated) and bytes,
    in path order. Compiled caches and other files do not count."""
    digest = hashlib.sha256()
    total = 0
    for path in sorted(package_dir.rglob("*.py"), key=lambda p: p.relative_to(package_dir).as_posix()):
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        total += len(data)
        if total > MAX_SOURCE_BYTES:
            raise ValueError(f"{package_dir} holds more than {MAX_SOURCE_BYTES} bytes of Python sources")
        relative = path.relative_to(package_dir).as_posix().encode()
        digest.update(len(relative).to_bytes(4, "big") + relative + len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def stored_version(package_dir: Path) -> str | None:
    """The `__version__` a stored copy of the package declares, read as text (nothing is imported)."""
    init = package_dir / "__init__.py"
    if not init.is_file():
        return None
    for line in init.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("__version__") and "=" in line:
            return line.split("=", 1)[1].strip().strip("\"'")[:40]
    return None
