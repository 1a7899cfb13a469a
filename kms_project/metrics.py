"""Prometheus exposition for KCM's processes (the metrics themselves: `apps.core.metrics`).

gunicorn workers and Celery's pool processes each write their metrics to memory-mapped files
(prometheus-client's multiprocess mode) under ``<KCM_STATE_DIR>/metrics/web`` and
``.../worker``. Each folder is emptied when its parent process starts (the gunicorn master,
Celery's main process), and a dead process's "live" gauges are removed when it exits.

Scrapes are answered by a small HTTP server (a thread of the gunicorn master) on a listener of
its own, which no request to KCM's public port can reach:

    KCM_METRICS_PORT      port of the listener; unset: no listener (metrics are still kept)
    KCM_METRICS_ADDRESS   address it binds (default 127.0.0.1: the host only)

It reports the web processes and the Celery workers that share its state folder: one scrape
target per node. `PROMETHEUS_MULTIPROC_DIR` is set here, before prometheus-client is imported
(it chooses its storage at import), and is inherited by the forked children.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kms_project.env import ImproperlyConfiguredEnv, env_int, env_str

ROLES = ("web", "worker")


def metrics_root() -> Path:
    from django.conf import settings

    return Path(settings.KCM_STATE_DIR) / "metrics"


def prepare_multiprocess(role: str) -> Path:
    """In the parent of `role`'s processes, before any of them records anything: empty the
    role's folder and point prometheus-client at it (for this process and its children)."""
    assert role in ROLES
    if "prometheus_client.values" in sys.modules and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Its storage is already chosen: per-process memory, which no scrape would see.
        raise RuntimeError("prometheus_client was imported before the metrics folder was set")
    folder = metrics_root() / role
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, mode=0o700)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return folder


def mark_dead(pid: int) -> None:
    """A child of this process exited: drop its "live" gauges (its counters still count)."""
    from prometheus_client import multiprocess

    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        multiprocess.mark_process_dead(pid, folder)


class _NodeCollector:
    """Every KCM process of this node: the web and worker folders, merged."""

    def __init__(self, folders: Iterable[Path]) -> None:
        self.folders = list(folders)

    def collect(self) -> Any:
        from prometheus_client.multiprocess import MultiProcessCollector

        files = [f for folder in self.folders for f in glob.glob(str(folder / "*.db"))]
        return MultiProcessCollector.merge(files, accumulate=True)


def listener_address() -> tuple[str, int] | None:
    """(address, port) from KCM_METRICS_ADDRESS and KCM_METRICS_PORT, or None if no port."""
    port = env_int("KCM_METRICS_PORT", 0, minimum=0)
    if not port:
        return None
    if port > 65535:
        raise ImproperlyConfiguredEnv(f"KCM_METRICS_PORT must be a port number, got {port}")
    return env_str("KCM_METRICS_ADDRESS", "127.0.0.1"), port


_listener: Any = None  # this process's scrape listener, if it started one


def serve(address: str, port: int) -> Any:
    """Start the scrape listener (a daemon thread of this process); returns its server."""
    global _listener
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_NodeCollector(metrics_root() / role for role in ROLES))
    _listener, _thread = start_http_server(port, addr=address, registry=registry)
    return _listener


def close_inherited_listener() -> None:
    """In a forked child: close the parent's scrape listener socket (the thread serving it
    did not survive the fork; only the parent answers scrapes)."""
    global _listener
    if _listener is not None:
        _listener.socket.close()
        _listener = None


def sweep_dead() -> None:
    """Drop the "live" gauges of every process of this folder that no longer runs (what
    gunicorn's child_exit hook does one by one; granian has no such hook)."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        return
    pids = set()
    for path in glob.glob(os.path.join(folder, "gauge_live*_*.db")):
        tail = path.rsplit("_", 1)[-1].removesuffix(".db")
        if tail.isdigit():
            pids.add(int(tail))
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_dead(pid)
        except PermissionError:
            pass  # alive, another user's
