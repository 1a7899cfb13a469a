"""Console plumbing: role-checked views and rendering of domain errors as messages."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from apps.audit import context as audit_context
from apps.audit.models import Outcome
from apps.audit.services import audit_record
from apps.core.errors import KcmError
from apps.tenants.access import current_tenant, principal_for_user

View = Callable[..., HttpResponse]


def console_view(roles: Iterable[str]) -> Callable[[View], View]:
    """Require a logged-in member of this tenant whose role is in `roles` (deny otherwise)."""
    allowed = frozenset(roles)

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if "HTTP_AUTHORIZATION" in request.META:
                _denied(request, "token_on_console")
                return render(
                    request,
                    "console/refused.html",
                    {
                        "title": "Forbidden",
                        "detail": "API tokens work on /api/ only; sign in here.",
                    },
                    status=403,
                )
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            principal = principal_for_user(request.user, current_tenant())
            if principal is not None:
                audit_context.update(actor=principal.actor, role=principal.role)
            else:
                audit_context.update(actor=f"user:{request.user.get_username()}")
            if principal is None or principal.role not in allowed:
                _denied(request, "not_a_member" if principal is None else "role_not_allowed")
                return render(
                    request,
                    "console/refused.html",
                    {
                        "title": "Forbidden",
                        "detail": "Your role in this tenant does not give access to this page.",
                    },
                    status=403,
                )
            request.kcm_principal = principal  # type: ignore[attr-defined]
            return view(request, *args, **kwargs)

        wrapper.kcm_roles = allowed  # type: ignore[attr-defined]
        return wrapper

    return decorator


def _denied(request: HttpRequest, code: str) -> None:
    audit_record(
        action="console.request",
        outcome=Outcome.DENIED,
        error_code=code,
        details={"method": request.method, "path": request.path},
        chained=False,
    )


def run_action(
    request: HttpRequest,
    action: Callable[[], Any],
    success: str | Callable[[Any], str],
    next_url: str,
    *,
    audit_action: str = "console.action",
) -> HttpResponse:
    """Run a service call from a console form: flash its outcome, then redirect (PRG).
    The service audits its success; a refusal is audited here."""
    try:
        result = action()
    except KcmError as exc:
        audit_record(
            action=audit_action,
            outcome=Outcome.DENIED if exc.status in (401, 403) else Outcome.ERROR,
            error_code=exc.code,
            details={"path": request.path},
        )
        messages.error(request, exc.detail)
    else:
        # `success` may be made from the result (e.g. to show a key check value).
        messages.success(request, success(result) if callable(success) else success)
    return redirect(next_url)
