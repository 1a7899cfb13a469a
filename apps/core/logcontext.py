"""What every log line says about the work it belongs to: the request id, the tenant and the
principal of the request being served (or of the request that queued the task being run).

A request binds itself (`bind_request`); the tenant and the principal are read from it when a
line is written, so lines written after authentication name the principal. A Celery task binds
plain fields (`bind_fields`). `ContextFilter`, on every log handler, copies them onto each
record. The principal is its actor label (`token:<name>`, `user:<name>`): never a credential.
"""

from __future__ import annotations

import contextvars
from typing import Any

from apps.core.tenancy import Principal

FIELDS = ("request_id", "tenant", "principal")

_request: contextvars.ContextVar[Any] = contextvars.ContextVar("kcm_log_request", default=None)
_fields: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "kcm_log_fields", default=None
)


def bind_request(request: Any) -> contextvars.Token[Any]:
    return _request.set(request)


def unbind_request(token: contextvars.Token[Any]) -> None:
    _request.reset(token)


def bind_fields(**fields: str) -> contextvars.Token[dict[str, str] | None]:
    return _fields.set({name: value for name, value in fields.items() if value})


def unbind_fields(token: contextvars.Token[dict[str, str] | None]) -> None:
    _fields.reset(token)


def principal_of(request: Any) -> str:
    """The actor label of whoever the request was authenticated as, or "" (not yet, or nobody).

    Reads only what authentication has already put on the request: a log line must never
    make it authenticate (or query anything)."""
    for principal in (getattr(request, "auth", None), getattr(request, "kcm_principal", None)):
        if isinstance(principal, Principal):
            return principal.actor
    user = getattr(request, "_cached_user", None)  # set once Django has loaded the session user
    if user is not None and user.is_authenticated:
        return f"user:{user.get_username()}"
    return ""


def tenant_of(request: Any) -> str:
    tenant = getattr(request, "tenant", None)
    return str(getattr(tenant, "slug", "") or getattr(tenant, "schema_name", "") or "")


def current() -> dict[str, str]:
    """The fields of the work in progress (empty outside requests and tasks)."""
    request = _request.get()
    if request is None:
        return _fields.get() or {}
    found = {
        "request_id": str(getattr(request, "request_id", "") or ""),
        "tenant": tenant_of(request),
        "principal": principal_of(request) or "anonymous",
    }
    return {name: value for name, value in found.items() if value}


class ContextFilter:
    """A logging filter (on handlers) that adds `current()` to every record it passes."""

    def filter(self, record: Any) -> bool:
        for name, value in current().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True
