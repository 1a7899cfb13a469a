"""Enforce the MFA policy on the server: a person who must have a second factor and has none
reaches only the enrolment pages (and sign-out, which is not a console view) until enrolling.
It sits after apps.tenants.middleware.ConsolePrincipalMiddleware, whose principal it reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from apps.core.console import is_console_view
from apps.core.errors import problem_response
from apps.mfa import services
from apps.tenants.access import current_tenant, principal_for_user


def mfa_exempt(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Mark a console view as reachable before enrolling (the enrolment pages themselves)."""
    view.kcm_mfa_exempt = True  # type: ignore[attr-defined]
    return view


class MfaEnrolmentMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any
    ) -> HttpResponse | None:
        if "HTTP_AUTHORIZATION" in request.META or not request.user.is_authenticated:
            return None  # tokens: step-up per decision instead; anonymous: sign-in first
        if request.path.startswith("/api/"):
            principal = principal_for_user(request.user, current_tenant())
            if principal is not None and self._blocked(principal, request.user.pk):
                return problem_response(
                    403,
                    "mfa_enrolment_required",
                    "Second factor required",
                    "Your tenant requires a second factor for your role: enrol one in the "
                    "console first.",
                    request,
                )
            return None
        if not is_console_view(view) or getattr(view, "kcm_mfa_exempt", False):
            return None
        principal = getattr(request, "kcm_principal", None)
        if principal is None or not self._blocked(principal, request.user.pk):
            return None
        messages.warning(request, "Your role requires a second factor: enrol one to continue.")
        return redirect("console:mfa")

    @staticmethod
    def _blocked(principal: Any, user_id: int) -> bool:
        return services.mfa_required(principal) and not services.has_factor(user_id)
