"""Immutable files: every snapshot and report gets a new directory, is written atomically, then frozen."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd


def utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def new_directory(parent: Path, name: str) -> Path:
    """A directory that did not exist before: an existing one is never reused, so never overwritten."""
    parent.mkdir(parents=True, exist_ok=True)
    for suffix in ["", *(f"-{i}" for i in range(1, 100))]:
        candidate = parent / f"{name}{suffix}"
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"could not create a new directory for {name} under {parent}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_parquet(frame: pd.DataFrame, path: Path) -> str:
    """Write atomically, make read-only, return the sha256 of the bytes."""
    tmp = path.with_name(path.name + ".partial")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    freeze(path)
    return sha256_file(path)


def write_json(payload: dict[str, Any], path: Path, *, frozen: bool = True) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    if frozen:
        freeze(path)


def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def freeze(path: Path) -> None:
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
