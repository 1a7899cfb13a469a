"""Who is acting, from where: set once per request (or task), read by every audit write."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class AuditContext:
    actor: str = "anonymous"
    role: str = ""
    source_ip: str = ""
    user_agent: str = ""
    request_id: str = ""


SYSTEM = AuditContext(actor="system")
_current: contextvars.ContextVar[AuditContext | None] = contextvars.ContextVar(
    "kcm_audit_context", default=None
)


def current() -> AuditContext:
    return _current.get() or SYSTEM


def set_context(context: AuditContext) -> contextvars.Token[AuditContext | None]:
    return _current.set(context)


def reset_context(token: contextvars.Token[AuditContext | None]) -> None:
    _current.reset(token)


def update(**changes: str) -> None:
    """Refine the current context, e.g. once authentication has named the actor."""
    _current.set(replace(current(), **changes))
