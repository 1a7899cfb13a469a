"""Dedicated PostgreSQL connections, beside Django's: for threads that work on their own (the
key cache's LISTEN thread, the audit sealer), connected as Django's settings say."""

from __future__ import annotations

from typing import Any, cast

import psycopg
from django.conf import settings


def dedicated_conninfo(*, application_name: str) -> dict[str, Any]:
    """psycopg's keyword arguments for the default database, named `application_name` in
    pg_stat_activity."""
    db = settings.DATABASES["default"]
    info: dict[str, Any] = {
        "dbname": db["NAME"],
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
        "host": db.get("HOST") or None,
        "port": db.get("PORT") or None,
        "application_name": application_name,
    }
    info.update(cast(dict[str, Any], db.get("OPTIONS") or {}))
    return {k: v for k, v in info.items() if v is not None}


def dedicated_connection(
    *, application_name: str, connect_timeout: int = 5
) -> psycopg.Connection[Any]:
    """A new autocommit connection to the default database; the caller closes it."""
    return psycopg.connect(
        autocommit=True,
        connect_timeout=connect_timeout,
        **dedicated_conninfo(application_name=application_name),
    )
