from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from apps.audit.context import AuditContext, reset_context, set_context
from apps.core.clientip import client_ip


class AuditContextMiddleware:
    """Note where each request comes from (the client, behind trusted proxies); authentication
    later names the actor."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = set_context(
            AuditContext(
                actor="anonymous",
                source_ip=client_ip(request),
                user_agent=request.META.get("HTTP_USER_AGENT", "")[:300],
                request_id=getattr(request, "request_id", ""),
            )
        )
        try:
            return self.get_response(request)
        finally:
            reset_context(token)
