"""One HTTP client per process for the platform's own repeated calls: health probes and registry polls.

Making an httpx client builds a TLS context (it reads the CA bundle), tens of milliseconds of CPU
that hold the interpreter lock, more than the loopback request it makes: a readiness loop or a
poller that makes one per call pays that every time, and a service's requests wait behind it.
"""

from __future__ import annotations

import os
import threading

import httpx

_clients: dict[int, httpx.Client] = {}
_lock = threading.Lock()


def shared() -> httpx.Client:
    """This process's shared client (httpx clients are safe to share between threads). A forked
    child gets its own: pooled connections must not be shared between processes."""
    pid = os.getpid()
    found = _clients.get(pid)
    if found is None:
        with _lock:
            found = _clients.get(pid)
            if found is None:
                found = _clients[pid] = httpx.Client()
    return found
