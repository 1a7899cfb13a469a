"""Chaining pending events soon after they are committed.

Hot paths (cryptographic operations, refused requests) commit their event to
audit_auditpending without taking the chain's lock. Each process that does so runs this small
thread, which chains its schemas' pending events every KCM_AUDIT_SEAL_SECONDS; anything left by
a process that died is chained by the next lifecycle event, search, verification, export or
the beat task `apps.audit.tasks.seal_all`.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)


def seal_here() -> int:
    """Chain the current schema's pending events, on the request's own connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT public.kcm_audit_seal()")
        row = cursor.fetchone()
    return int(row[0]) if row else 0


class _Sealer:
    def __init__(self) -> None:
        self.pid = -1
        self.schemas: set[str] = set()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def note(self, schema: str) -> None:
        if settings.KCM_AUDIT_SEAL_SECONDS <= 0:
            return
        with self.lock:
            if self.pid != os.getpid() or self.thread is None:
                self.pid, self.schemas = os.getpid(), set()
                self.stop = threading.Event()
                self.thread = threading.Thread(
                    target=self.run, name="kcm-audit-sealer", daemon=True
                )
                self.thread.start()
            self.schemas.add(schema)

    def run(self) -> None:
        import psycopg

        from apps.keychain.cache import _conninfo

        conn: Any = None
        while not self.stop.wait(settings.KCM_AUDIT_SEAL_SECONDS):
            with self.lock:
                schemas, self.schemas = self.schemas, set()
            if not schemas:
                continue
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(autocommit=True, connect_timeout=5, **_conninfo())
                for schema in schemas:
                    conn.execute(
                        "SELECT set_config('search_path', %s, false)", [f'"{schema}", public']
                    )
                    conn.execute("SELECT public.kcm_audit_seal()")
            except Exception as exc:  # retried next round; nothing is lost (still pending)
                logger.warning("audit sealer: %s", type(exc).__name__)
                with self.lock:
                    self.schemas |= schemas
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


def note_pending(schema: str) -> None:
    _sealer.note(schema)


def stop_sealer() -> None:
    _sealer.shutdown()
