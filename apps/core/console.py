"""Console plumbing: role-checked views and rendering of domain errors as messages.

Refusals and failures are sent as `request_outcome` (apps.audit records them); the principal
is the one apps.tenants.middleware.ConsolePrincipalMiddleware put on the request."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from apps.core.errors import KcmError, ValidationFailed
from apps.core.signals import request_outcome_send

View = Callable[..., HttpResponse]


def console_view(roles: Iterable[str]) -> Callable[[View], View]:
    """Require a logged-in member of this tenant holding one of `roles` (deny otherwise).
    The view gets the principal as `request.kcm_principal`."""
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
            principal = getattr(request, "kcm_principal", None)
            if principal is None or not principal.holds_any(allowed):
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
            return view(request, *args, **kwargs)

        wrapper.kcm_roles = allowed  # type: ignore[attr-defined]
        return wrapper

    return decorator


def is_console_view(view: Callable[..., Any]) -> bool:
    """Whether `view` was made by `console_view` (and so needs the principal)."""
    return hasattr(view, "kcm_roles")


def _denied(request: HttpRequest, code: str) -> None:
    request_outcome_send(
        action="console.request",
        outcome="denied",
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
        request_outcome_send(
            action=audit_action,
            outcome="denied" if exc.status in (401, 403) else "error",
            error_code=exc.code,
            details={"path": request.path},
        )
        messages.error(request, exc.detail)
    else:
        # `success` may be made from the result (e.g. to show a key check value).
        messages.success(request, success(result) if callable(success) else success)
    return redirect(next_url)


def invalid_form(form: Any) -> Callable[[], None]:
    """An action for `run_action` that refuses a form that did not validate, with its errors."""

    def fail() -> None:
        raise ValidationFailed(f"Please correct the form: {form.errors.as_text()}")

    return fail
