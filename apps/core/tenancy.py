"""Tenancy helpers every layer may use: which schema the database connection works in, and
who is asking (the `Principal`, which apps.tenants resolves from a session or a token)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db import connection


@dataclass(frozen=True)
class Principal:
    """An authenticated actor acting in one tenant with a set of roles (a token holds one).

    `key_grant` is the parsed key-use grant of a key user (apps.tenants.grants.KeyGrant, which
    this layer does not know: read it through apps.tenants.grants.grant_of), or None."""

    kind: str  # "user" or "token"
    id: int
    label: str
    roles: frozenset[str]
    tenant_id: int
    user_id: int | None = None
    token_id: int | None = None
    key_grant: object | None = None

    @property
    def role(self) -> str:
        """The roles as one label (audit log, messages): sorted, joined with commas."""
        return ",".join(sorted(self.roles))

    def holds_any(self, roles: Iterable[str]) -> bool:
        return not self.roles.isdisjoint(roles)

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.label}"


def current_schema() -> str:
    """The schema the connection works in now (a tenant's, or "public")."""
    return str(connection.schema_name)  # type: ignore[attr-defined]
