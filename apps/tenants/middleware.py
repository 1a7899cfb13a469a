from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.audit import context as audit_context
from apps.core.console import is_console_view
from apps.core.errors import problem_response
from apps.tenants.access import current_tenant, principal_for_user
from apps.tenants.models import TenantStatus


class TenantStatusMiddleware:
    """A tenant that is not ACTIVE answers nothing but a clear refusal."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        tenant = getattr(request, "tenant", None)
        if tenant is None or tenant.schema_name == "public":
            return self.get_response(request)
        if tenant.status == TenantStatus.SUSPENDED:
            return self._refuse(
                request,
                403,
                "tenant_suspended",
                "Tenant suspended",
                f"The tenant {tenant.slug} is suspended; contact your platform operator."
                + (f" Reason: {tenant.status_reason}" if tenant.status_reason else ""),
            )
        if tenant.status != TenantStatus.ACTIVE:
            return self._refuse(request, 404, "tenant_not_found", "Not found", "No such tenant.")
        return self.get_response(request)

    def _refuse(
        self, request: HttpRequest, status: int, code: str, title: str, detail: str
    ) -> HttpResponse:
        if request.path.startswith("/api/"):
            return problem_response(status, code, title, detail, request)
        return render(
            request, "console/refused.html", {"title": title, "detail": detail}, status=status
        )


class ConsolePrincipalMiddleware:
    """Before a console view (`console_view`, which checks its role): the signed-in user's
    principal in this tenant as `request.kcm_principal` (None if not a member), named on the
    audit context. API views get theirs from DRF authentication instead."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any
    ) -> None:
        # A token on the console is refused by the view itself, before anyone is named.
        if not is_console_view(view) or "HTTP_AUTHORIZATION" in request.META:
            return
        user = request.user
        if not user.is_authenticated:
            return
        principal = principal_for_user(user, current_tenant())
        if principal is not None:
            audit_context.update(actor=principal.actor, role=principal.role)
        else:
            audit_context.update(actor=f"user:{user.get_username()}")
        request.kcm_principal = principal  # type: ignore[attr-defined]
