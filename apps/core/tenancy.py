"""Tenancy helpers every layer may use: which schema the database connection works in."""

from __future__ import annotations

from django.db import connection


def current_schema() -> str:
    """The schema the connection works in now (a tenant's, or "public")."""
    return str(connection.schema_name)  # type: ignore[attr-defined]
