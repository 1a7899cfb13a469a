"""Console plumbing: role-checked views and rendering of domain errors as messages."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

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
            if principal is None or principal.role not in allowed:
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


def run_action(
    request: HttpRequest, action: Callable[[], Any], success: str, next_url: str
) -> HttpResponse:
    """Run a service call from a console form: flash its outcome, then redirect (PRG)."""
    try:
        action()
    except KcmError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, success)
    return redirect(next_url)
