"""GET /healthz: liveness of what KCM depends on, the database, the Celery broker and the
platform's keystore (here, above every app, since it looks at all of them)."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from apps.keystores.registry import platform_keystore_health
from kms_project.celery import app


def _timed(check: Any) -> dict[str, Any]:
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
    checks = {"database": _timed(_database), "broker": _timed(_broker), "hsm": _timed(_hsm)}
    ok = all(check.get("ok") for check in checks.values())
    return {"status": "ok" if ok else "degraded", "checks": checks}


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    report = health_report()
    return JsonResponse(report, status=200 if report["status"] == "ok" else 503)
