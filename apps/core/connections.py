"""Dedicated PostgreSQL connections, beside Django's, for threads that work on their own (the
key cache's LISTEN thread, the audit sealer, the audit group commit) and for locks that must
outlive a transaction (the rewrap runners').

Two kinds:
- pooled (`direct=False`): to KCM_DATABASE_URL, which may be a PgBouncer in transaction
  mode. Such a connection must hold no session state between transactions: every statement
  either names its schema or runs in a transaction that sets it, and nothing is prepared.
- direct (`direct=True`): to KCM_DATABASE_DIRECT_URL (by default the same URL), for what
  needs one server session: LISTEN, and session-level advisory locks.
"""

from __future__ import annotations

from typing import Any, cast

import psycopg
from django.conf import settings


def dedicated_conninfo(*, application_name: str, direct: bool = False) -> dict[str, Any]:
    """psycopg's keyword arguments for the database, named `application_name` in
    pg_stat_activity."""
    db = (direct and settings.KCM_DATABASE_DIRECT) or settings.DATABASES["default"]
    info: dict[str, Any] = {
        "dbname": db["NAME"],
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
        "host": db.get("HOST") or None,
        "port": db.get("PORT") or None,
        "application_name": application_name,
    }
    info.update(cast(dict[str, Any], db.get("OPTIONS") or {}))
    # Django-only options, not libpq's.
    info.pop("server_side_binding", None)
    info.pop("cursor_factory", None)
    return {k: v for k, v in info.items() if v is not None}


def dedicated_connection(
    *, application_name: str, connect_timeout: int = 5, direct: bool = False
) -> psycopg.Connection[Any]:
    """A new autocommit connection; the caller closes it. Never prepares statements (a
    prepared statement lives in one server connection, which a pooler does not promise)."""
    connection = psycopg.connect(
        autocommit=True,
        connect_timeout=connect_timeout,
        **dedicated_conninfo(application_name=application_name, direct=direct),
    )
    connection.prepare_threshold = None
    return connection
