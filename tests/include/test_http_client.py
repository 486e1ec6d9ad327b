"""The platform's shared HTTP client: one per process, never one shared across a fork."""

from __future__ import annotations

import os

from co2 import http_client


def test_a_process_reuses_its_client() -> None:
    assert http_client.shared() is http_client.shared()


def test_a_forked_child_makes_its_own() -> None:
    parents = http_client.shared()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its pooled connections must not be the parent's
        try:
            mine = http_client.shared()
            os.write(write, b"own" if mine is not parents and mine is http_client.shared() else b"shared")
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 16) == b"own"
    assert http_client.shared() is parents
