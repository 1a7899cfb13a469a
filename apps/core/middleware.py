from __future__ import annotations

import logging
import os
import re
import secrets
import time
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import SESSION_KEY, logout
from django.http import HttpRequest, HttpResponse

from apps.core import logcontext
from apps.core.errors import problem_response

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_LAST_SEEN = "kcm_last_seen"
request_log = logging.getLogger("kcm.request")


def route_of(request: HttpRequest) -> str:
    """The URL pattern's name (`api:service-key-generate-data-key`), never the path itself,
    which holds ids; "" when no pattern matched (probes, static files, 404s)."""
    match = getattr(request, "resolver_match", None)
    return match.view_name if match is not None else ""


class RequestIdMiddleware:
    """Give every request an id (the caller's X-Request-Id if well formed) and echo it back;
    every log line written while it is served carries the id, and one line sums it up
    (route, status, duration)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        supplied = request.headers.get("X-Request-Id", "")
        request_id = supplied if _REQUEST_ID.match(supplied) else secrets.token_hex(8)
        request.request_id = request_id  # type: ignore[attr-defined]
        token = logcontext.bind_request(request)
        try:
            response = self.get_response(request)
            response["X-Request-Id"] = request_id
            if not settings.PRODUCTION:
                response["X-KCM-Worker"] = str(os.getpid())  # which process served it
            _log_request(request, response.status_code, time.perf_counter() - started)
            return response
        finally:
            logcontext.unbind_request(token)


def _log_request(request: HttpRequest, status: int, seconds: float) -> None:
    route = route_of(request)
    # Probes and static files, answered without a view, would drown the rest.
    level = logging.INFO if route or status >= 400 else logging.DEBUG
    if request_log.isEnabledFor(level):
        duration_ms = round(seconds * 1000, 2)
        request_log.log(
            level,
            "%s %s %s %.1f ms",
            request.method,
            route or "-",
            status,
            duration_ms,
            extra={
                "method": request.method,
                "route": route,
                "status": status,
                "duration_ms": duration_ms,
            },
        )


class BodySizeLimitMiddleware:
    """Refuse bodies over KCM_MAX_BODY_BYTES with 413 before anything reads them."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return problem_response(
                400, "malformed_request", "Bad request", "Invalid Content-Length", request
            )
        if length > settings.KCM_MAX_BODY_BYTES:
            return problem_response(
                413,
                "payload_too_large",
                "Payload too large",
                f"Request bodies are limited to {settings.KCM_MAX_BODY_BYTES} bytes.",
                request,
            )
        return self.get_response(request)


class SessionIdleTimeoutMiddleware:
    """End a console session that has not been used for KCM_SESSION_IDLE_SECONDS (its absolute
    lifetime is SESSION_COOKIE_AGE). The last use is written at most once a minute, not on
    every request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = getattr(request, "session", None)
        if session is not None and SESSION_KEY in session:
            now = int(time.time())
            last = session.get(_LAST_SEEN)
            if isinstance(last, int) and now - last > settings.KCM_SESSION_IDLE_SECONDS:
                logout(request)
            elif not isinstance(last, int) or now - last >= 60:
                session[_LAST_SEEN] = now
        return self.get_response(request)
