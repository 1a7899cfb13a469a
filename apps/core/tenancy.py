"""Tenancy helpers every layer may use: which schema the database connection works in, and
who is asking (the `Principal`, which apps.tenants resolves from a session or a token)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection


@dataclass(frozen=True)
class Principal:
    """An authenticated actor acting in one tenant with one role."""

    kind: str  # "user" or "token"
    id: int
    label: str
    role: str
    tenant_id: int
    user_id: int | None = None
    token_id: int | None = None

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.label}"


def current_schema() -> str:
    """The schema the connection works in now (a tenant's, or "public")."""
    return str(connection.schema_name)  # type: ignore[attr-defined]
