from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.core.errors import problem_response
from apps.tenants.models import TenantStatus

_EXEMPT_PATHS = ("/healthz",)


class TenantStatusMiddleware:
    """A tenant that is not ACTIVE answers nothing but a clear refusal."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        tenant = getattr(request, "tenant", None)
        if tenant is None or tenant.schema_name == "public" or request.path in _EXEMPT_PATHS:
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
