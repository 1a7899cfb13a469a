"""Faults for e2e tests: a PostgreSQL server of the test's own (to stop and start under load),
a load of data-key calls that records every answer, and a small full filesystem.

    with PrivatePostgres() as pg, LiveStack(env=pg.env()) as stack:
        load = Load(stack, tenant, paths=["fast", "django"])
        ...
        pg.stop(); pg.start()

The shared project-local PostgreSQL (`make test`'s) is never touched: PrivatePostgres runs a
cluster of its own in a temporary folder, with the same binaries and the same code as the
devstack's (tools/kcmstack/postgres.py), listening on a Unix socket in that folder only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg

from bench.common import HttpClient
from tools.kcmstack.postgres import Postgres

from .stack import LiveStack
from .tenantkit import CONTEXT, KEY_USER, Tenant, service_path


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary folder, stopped and started at will."""

    def __init__(self) -> None:
        # Short: the socket's path must stay under ~100 bytes.
        self.state = Path(tempfile.mkdtemp(prefix="kcmpg-", dir="/tmp"))
        self.server = Postgres(self.state)

    def __enter__(self) -> PrivatePostgres:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(BaseException):
            self.server.stop()
        shutil.rmtree(self.state, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@/{database}?host={self.server.sockdir}&port=5433"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a LiveStack on this server."""
        return {**os.environ, "KCM_DATABASE_URL": self.url(), **extra}

    def start(self) -> float:
        """Start the server; seconds it took until it accepts connections."""
        started = time.monotonic()
        self.server.start()
        return time.monotonic() - started

    def stop(self) -> float:
        """Stop it the way an operator restarting it does (`pg_ctl stop -m fast`: sessions are
        terminated, open transactions roll back); seconds it took."""
        started = time.monotonic()
        self.server.stop()
        return time.monotonic() - started


@dataclass
class Answer:
    path: str  # "fast" (the data plane) or "django"
    request_id: str
    sent: float  # monotonic
    seconds: float
    status: int  # 0: no HTTP answer (connection refused or reset)
    code: str | None = None


@dataclass
class Load:
    """Threads calling generate-data-key as a key user until stopped, every answer recorded.

    "fast" requests are served by the data plane (apps/keychain/dataplane.py); "django"
    requests send `Content-Type: application/json;charset=utf-8`, which the data plane hands to
    Django untouched (it takes only the two exact JSON content types), so the same operation
    goes through Django's middleware, DRF and the same services.
    """

    stack: LiveStack
    tenant: Tenant
    paths: tuple[str, ...] = ("fast", "django")
    threads_per_path: int = 2
    pause: float = 0.01
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(path, n), daemon=True)
            for path in self.paths
            for n in range(self.threads_per_path)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self, path: str, index: int) -> None:
        client = HttpClient(self.stack.port, self.tenant.host, self.tenant.tokens[KEY_USER])
        if path == "django":
            client.headers["Content-Type"] = "application/json;charset=utf-8"
        url = f"{service_path()}/generate-data-key/"
        body = json.dumps({"context": CONTEXT}).encode()
        number = 0
        while not self._stop.is_set():
            number += 1
            request_id = f"{path}-{index}-{number}"
            client.headers["X-Request-Id"] = request_id
            sent = time.monotonic()
            answer = Answer(path, request_id, sent, 0.0, 0)
            try:
                status, _, data = client.send("POST", url, body)
                answer.status = status
                if status != 200:
                    with contextlib.suppress(ValueError):
                        answer.code = json.loads(data).get("code")
            except OSError:
                pass
            answer.seconds = time.monotonic() - sent
            with self._lock:
                self.answers.append(answer)
            time.sleep(self.pause)

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)


def first_ok_after(answers: list[Answer], path: str, moment: float) -> float | None:
    """When (monotonic) the first request sent after `moment` on `path` was answered 200."""
    oks = [
        a.sent + a.seconds
        for a in answers
        if a.path == path and a.sent >= moment and a.status == 200
    ]
    return min(oks) if oks else None


def audited_request_ids(database_url: str, schema: str, action: str) -> set[str]:
    """Request ids of `action`'s events in `schema`: still pending, or chained."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        # Pending first: an event the sealer chains in between is then found in the chain.
        pending = conn.execute(
            f'SELECT body::jsonb ->> %s FROM "{schema}".audit_auditpending', ["request_id"]
        )
        ids = {row[0] for row in pending}
        rows = conn.execute(
            f'SELECT request_id FROM "{schema}".audit_auditevent WHERE action = %s', [action]
        )
        ids.update(row[0] for row in rows)
    return ids


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[None]:
    """Mount a tmpfs of `size` (e.g. "64k") on `path` for the block: a disk that fills up.
    Needs root (or CAP_SYS_ADMIN); raises PermissionError otherwise."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise PermissionError(f"cannot mount a tmpfs on {path}: {result.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def describe(answers: list[Answer]) -> dict[str, Any]:
    """Counts by (path, status, code), for assertion messages."""
    counts: dict[str, int] = {}
    for a in answers:
        key = f"{a.path} {a.status} {a.code or ''}".strip()
        counts[key] = counts.get(key, 0) + 1
    return counts
