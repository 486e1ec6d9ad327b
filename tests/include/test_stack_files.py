"""`co2 up`'s files and addresses: secrets private from their first byte, health on loopback only.

Modes are observed while the files are written, not only at the end: an audit hook records the
mode of every file of the watched home at each chmod and rename, that is, before any fix-up.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from co2 import local
from co2.settings import Settings
from co2.stack import Secrets, StackPlan, airflow_environment, write_airflow_passwords

_watched: list[Path] = []
_seen: list[tuple[str, int]] = []


def _record_modes(event: str, args: tuple[Any, ...]) -> None:
    if not _watched or event not in ("os.chmod", "os.rename") or not isinstance(args[0], (str, bytes, Path)):
        return
    path = Path(os.fsdecode(args[0]))
    if any(path == home or home in path.parents for home in _watched) and path.exists():
        _seen.append((str(path.relative_to(_watched[0].parent)), stat.S_IMODE(path.stat().st_mode)))


sys.addaudithook(_record_modes)  # audit hooks cannot be removed: it records only inside `watching`


@contextmanager
def watching(home: Path, umask: int = 0) -> Iterator[list[tuple[str, int]]]:
    """Record the modes of `home`'s files as they change, with a umask that would let everyone read."""
    previous = os.umask(umask)
    _watched.append(home)
    _seen.clear()
    try:
        yield _seen
    finally:
        _watched.clear()
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_are_private_from_their_first_byte(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with watching(home) as seen:
        keys = Secrets.load_or_create(home)
    assert (mode(home), mode(home / "secrets.json")) == (0o700, 0o600)
    assert json.loads((home / "secrets.json").read_text())["admin_password"] == keys.admin_password
    assert seen, "the writing was not observed"
    assert [(name, oct(m)) for name, m in seen if m & 0o077] == []  # no moment readable by others
    assert [p.name for p in home.iterdir()] == ["secrets.json"]  # no temporary file left
    with watching(home) as seen:  # a new admin password is written the same way
        assert Secrets.load_or_create(home, admin_password="a-new-one").admin_password == "a-new-one"
    assert seen and [(name, oct(m)) for name, m in seen if m & 0o077] == []
    assert mode(home / "secrets.json") == 0o600


def test_an_existing_home_and_secrets_file_are_tightened(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    old = {"jwt_secret": "j", "fernet_key": "f", "admin_password": "p"}
    (home / "secrets.json").write_text(json.dumps(old))
    (home / "secrets.json").chmod(0o644)
    assert Secrets.load_or_create(home).admin_password == "p"
    assert (mode(home), mode(home / "secrets.json")) == (0o700, 0o600)


def test_the_airflow_passwords_file_is_private_from_its_first_byte(tmp_path: Path) -> None:
    plan = StackPlan.from_settings(Settings(home=tmp_path / "home"))
    keys = Secrets.load_or_create(plan.home)
    with watching(plan.home) as seen:
        passwords = write_airflow_passwords(plan, keys)
    assert json.loads(passwords.read_text()) == {plan.admin_user: keys.admin_password}
    assert mode(passwords) == 0o600 and mode(plan.home) == 0o700
    assert seen and [(name, oct(m)) for name, m in seen if m & 0o077] == []


def test_co2_run_creates_its_home_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with watching(home):
        local.run_airflow_environment(home)
    assert mode(home) == 0o700


@pytest.mark.parametrize("inherited", [None, "0.0.0.0"])
def test_the_scheduler_health_server_listens_on_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inherited: str | None
) -> None:
    if inherited:  # a shell's own Airflow settings do not widen it
        monkeypatch.setenv("AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST", inherited)
    plan = StackPlan.from_settings(Settings(home=tmp_path / "home"))
    env = airflow_environment(plan, Secrets("jwt", "fernet", "password"))
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] == "127.0.0.1" == plan.host
