"""Liveness and readiness, answered before tenant routing on every host and address, and the
detailed report for platform operators (here, above every app, since it looks at all of them).

- ``GET /healthz``: the process answers (no dependency is touched, nothing is disclosed).
- ``GET /readyz``: whether the database, the Celery broker and the platform keystore answer,
  as booleans only; computed at most once a second per process, so that probes cannot queue
  on the HSM lock or open a broker connection per call.
- ``GET /api/v1/platform/health/`` (platform operators): the same checks with their timings
  and errors, which name hosts, files and exception text and so are not for everyone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import KcmAPIView
from apps.core.roles import Role
from apps.keystores.registry import platform_keystore_health
from kms_project.celery import app

# Readiness is recomputed at most this often (seconds) in each process.
READY_CACHE_SECONDS = 1.0
PROBE_PATHS = ("/healthz", "/readyz")


def _timed(check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    started = time.monotonic()
    try:
        result = check()
    except Exception as exc:  # health reports, it never raises
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


def _database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    db = settings.DATABASES["default"]
    host = db.get("HOST") or "local socket"
    return {"ok": True, "host": str(host), "name": str(db.get("NAME"))}


def _broker() -> dict[str, Any]:
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        transport = conn.transport_cls
    return {"ok": True, "transport": str(transport)}


def _hsm() -> dict[str, Any]:
    return dict(platform_keystore_health())


def health_report() -> dict[str, Any]:
    """Every check with its details (for platform operators only)."""
    checks = {"database": _timed(_database), "broker": _timed(_broker), "hsm": _timed(_hsm)}
    ok = all(check.get("ok") for check in checks.values())
    return {"status": "ok" if ok else "degraded", "checks": checks}


class _ReadyCache:
    """The last readiness verdict of this process and when it was taken; one computes it while
    concurrent probes wait for that answer rather than start their own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._value: dict[str, Any] = {}

    def get(self) -> dict[str, Any]:
        with self._lock:
            if time.monotonic() - self._at >= READY_CACHE_SECONDS:
                report = health_report()
                self._value = {
                    "status": report["status"],
                    "checks": {name: bool(c.get("ok")) for name, c in report["checks"].items()},
                }
                self._at = time.monotonic()
            return self._value

    def clear(self) -> None:
        with self._lock:
            self._at = float("-inf")


ready_cache = _ReadyCache()


def _probe(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        response = JsonResponse({"status": "method not allowed"}, status=405)
        response["Allow"] = "GET, HEAD"
        return response
    if request.path == "/healthz":
        response = JsonResponse({"status": "ok"})
    else:
        report = ready_cache.get()
        response = JsonResponse(report, status=200 if report["status"] == "ok" else 503)
    response["Cache-Control"] = "no-store"
    return response


class ProbeMiddleware:
    """Answer /healthz and /readyz before host validation and tenant routing: an orchestrator
    probes by address (``Host: 127.0.0.1``, a pod IP) and must get the same answer everywhere.
    Placed before TenantMainMiddleware, SecurityMiddleware (no HTTPS redirect for probes) and
    the audit context (probes are not audited)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info in PROBE_PATHS:
            request.metrics_route = request.path_info[1:]  # type: ignore[attr-defined]
            return _probe(request)
        return self.get_response(request)


class PlatformHealthView(KcmAPIView):
    """The detailed health report: each check's timing and, when it fails, why. It answers 200
    either way (the report was made); its `status` says whether KCM is ready."""

    allowed_roles = frozenset({Role.PLATFORM_OPERATOR})

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response(health_report())
