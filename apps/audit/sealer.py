"""Chaining pending events soon after they are committed.

Hot paths (cryptographic operations, refused requests) commit their event to
audit_auditpending without taking the chain's lock. Each process that does so runs this small
thread, which chains its schemas' pending events every KCM_AUDIT_SEAL_SECONDS; anything left by
a process that died is chained by the next lifecycle event, search, verification, export or
the beat task `apps.tenants.tasks.audit_seal_all`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.db import connection

from apps.core import metrics
from apps.core.connections import dedicated_connection
from apps.core.forks import after_fork_in_child

logger = logging.getLogger(__name__)


def seal_here() -> int:
    """Chain the current schema's pending events, on the request's own connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT public.kcm_audit_seal()")
        row = cursor.fetchone()
    return int(row[0]) if row else 0


class _Sealer:
    def __init__(self) -> None:
        self.schemas: set[str] = set()
        # When the oldest event noted since the last seal was noted (the seal lag's start).
        self.first_noted: float | None = None
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def note(self, schema: str) -> None:
        if settings.KCM_AUDIT_SEAL_SECONDS <= 0:
            return
        if schema in self.schemas:
            # Already due, without the lock (every data-key request comes here): the event was
            # committed before this read, and the round that takes this set seals after
            # taking it, so it reads the event.
            return
        with self.lock:
            if self.thread is None:
                self.stop = threading.Event()
                self.thread = threading.Thread(
                    target=self.run, name="kcm-audit-sealer", daemon=True
                )
                self.thread.start()
            self.schemas.add(schema)
            if self.first_noted is None:
                self.first_noted = time.monotonic()

    def run(self) -> None:
        conn: Any = None
        while not self.stop.wait(settings.KCM_AUDIT_SEAL_SECONDS):
            with self.lock:
                schemas, self.schemas = self.schemas, set()
                first_noted, self.first_noted = self.first_noted, None
            if not schemas:
                continue
            try:
                if conn is None or conn.closed:
                    conn = dedicated_connection(application_name="kcm-audit-sealer")
                for schema in schemas:
                    # The schema and the seal in one transaction: through a transaction-pooling
                    # PgBouncer, a session-level setting could stay behind on a server
                    # connection, or the seal run on another one.
                    with conn.transaction():
                        conn.execute(
                            "SELECT set_config('search_path', %s, true)", [f'"{schema}", public']
                        )
                        conn.execute("SELECT public.kcm_audit_seal()")
                if first_noted is not None:
                    metrics.AUDIT_SEAL_LAG_SECONDS.observe(time.monotonic() - first_noted)
            except Exception as exc:  # retried next round; nothing is lost (still pending)
                logger.warning("audit sealer: %s", type(exc).__name__)
                metrics.AUDIT_SEAL_FAILURES.inc()
                with self.lock:
                    self.schemas |= schemas
                    if first_noted is not None:
                        self.first_noted = min(first_noted, self.first_noted or first_noted)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def shutdown(self, timeout: float = 5.0) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout)
        self.thread = None


_sealer = _Sealer()


@after_fork_in_child
def _forget_after_fork() -> None:
    # The parent's thread does not run here, and its lock may have been held at the fork:
    # the child starts its own sealer when it first notes a pending event.
    global _sealer
    _sealer = _Sealer()


def note_pending(schema: str) -> None:
    _sealer.note(schema)


def stop_sealer() -> None:
    _sealer.shutdown()
