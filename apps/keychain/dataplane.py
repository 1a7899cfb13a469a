"""The data plane: the five service-key operations (single and batch) served beside Django's
stack, with the same contract (docs/dataplane.md).

`DataPlane(django_app)` is a WSGI application. It takes `POST /api/v1/service-keys/<name>/
<operation>/[batch/]` from an authenticated key user of an active tenant, and hands everything
else to `django_app` untouched: other URLs, unknown hosts, suspended tenants, missing or bad
tokens, bodies too large, content types other than JSON. What it takes, it serves with the same
parts Django's path uses: the tenant's token principal (apps.tenants.access), the view's own
parsing and audit target/details (apps.keychain.api), the grant checks and the operation
(apps.keychain.datakeys), the rate limits (apps.core.throttling), the error rendering
(apps.core.errors) and the audit event's body (apps.audit.services). What it skips is what a
data-key call does not need: sessions, CSRF, messages, templates, axes, DRF's dispatch, the
per-request tenant and token queries (cached: see dataplane_state) and the per-request
connection health check (a failed statement closes the connection and answers 503).

A request costs one statement when its caches are warm: the audit event's insert, which
also checks that the tenant, its domain, its key epoch and the token still allow it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from io import BytesIO
from typing import Any

from django.conf import settings
from django.core.handlers.wsgi import WSGIRequest
from django.db import Error as DatabaseError
from django.db import connection
from django.http import HttpResponse
from rest_framework import exceptions as drf
from rest_framework.renderers import JSONRenderer

from apps.audit import context as audit_context
from apps.audit.context import AuditContext
from apps.audit.sealer import note_pending
from apps.audit.services import event_body
from apps.core import logcontext, metrics
from apps.core.clientip import client_ip
from apps.core.errors import (
    PROBLEM_CONTENT_TYPE,
    DatabaseUnavailable,
    api_exception_handler,
    problem,
)
from apps.core.middleware import _REQUEST_ID, _log_request
from apps.core.parsers import JSONParser
from apps.core.throttling import AddressRateThrottle, PrincipalRateThrottle
from apps.keychain import api, dataplane_state
from apps.keychain.dataplane_commit import CommitFailed
from apps.keychain.dataplane_state import Route
from apps.tenants.permissions import RoleNotAllowed, WrongTenant

logger = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_PATH = re.compile(
    r"^/api/v1/service-keys/(?P<name>[-a-zA-Z0-9_]+)/(?P<op>"
    + "|".join(re.escape(op) for op in api._INPUTS)
    + r")/(?P<batch>batch/)?$"
)
_JSON_TYPES = frozenset({"application/json", "application/json; charset=utf-8"})
_ACCEPTED = ("*/*", "application/json", "application/*")
_STATUS_TEXT = {200: "200 OK", 400: "400 Bad Request", 403: "403 Forbidden"}
_RENDERER = JSONRenderer()


class _Route:
    """What `route_of` and the metrics read of a request: the URL pattern's name."""

    def __init__(self, view_name: str) -> None:
        self.view_name = view_name


class Call:
    """One data-plane request, shaped as much like Django's and DRF's requests as the parts
    reused from them read (`path`, `META`, `data`, `auth`, `request_id`, `_request`)."""

    method = "POST"

    def __init__(self, environ: dict[str, Any], body: bytes, name: str, op: str, batch: bool):
        self.META = environ
        self.path = environ.get("PATH_INFO", "")
        self.body = body
        self.name, self.op, self.batch = name, op, batch
        supplied = environ.get("HTTP_X_REQUEST_ID", "")
        self.request_id = supplied if _REQUEST_ID.match(supplied) else secrets.token_hex(8)
        suffix = "-batch" if batch else ""
        self.resolver_match = _Route(f"api:service-key-{op}{suffix}")
        self.auth: Any = None
        self.tenant: Any = None
        self._data: Any = None
        self._request = self

    @property
    def data(self) -> Any:
        """The parsed body, as DRF's request.data: {} when empty; a parse error raised once,
        then {} (as DRF leaves it for the audit details)."""
        if self._data is None:
            self._data = {}
            if self.body:
                self._data = JSONParser().parse(BytesIO(self.body), "application/json", None)
        return self._data


class _Delegate(Exception):
    """Serve this request with Django's path instead (before anything was counted or sent)."""


class DataPlane:
    def __init__(self, django_app: WSGIApp) -> None:
        self.django_app = django_app
        self._headers: dict[bool, list[tuple[str, str]]] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        match = (
            _PATH.match(environ.get("PATH_INFO", ""))
            if environ.get("REQUEST_METHOD") == "POST"
            else None
        )
        if match is None:
            return self.django_app(environ, start_response)
        try:
            body = self._body(environ)
            call = Call(environ, body, match["name"], match["op"], bool(match["batch"]))
            status, payload, extra = self.serve(call)
        except _Delegate:
            return self.django_app(environ, start_response)
        headers = [
            ("Content-Type", "application/json" if status < 400 else PROBLEM_CONTENT_TYPE),
            ("Content-Length", str(len(payload))),
            *extra,
            *self._static_headers(_secure(environ)),
            ("X-Request-Id", call.request_id),
        ]
        if not settings.PRODUCTION:
            headers.append(("X-KCM-Worker", str(os.getpid())))
        start_response(_STATUS_TEXT.get(status) or f"{status} {_reason(status)}", headers)
        return [payload]

    def _body(self, environ: dict[str, Any]) -> bytes:
        if environ.get("CONTENT_TYPE", "").lower() not in _JSON_TYPES:
            raise _Delegate  # no body DRF would read as JSON: let it say what it does
        accept = environ.get("HTTP_ACCEPT", "")
        if accept and not any(kind in accept for kind in _ACCEPTED):
            raise _Delegate  # DRF's content negotiation may answer 406
        if settings.SECURE_SSL_REDIRECT and not _secure(environ):
            raise _Delegate  # Django redirects to https
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise _Delegate from None
        if length > settings.KCM_MAX_BODY_BYTES or length < 0:
            raise _Delegate
        body: bytes = environ["wsgi.input"].read(length) if length else b""
        # Django may need to read it again.
        environ["wsgi.input"] = BytesIO(body)
        return body

    def serve(self, call: Call) -> tuple[int, bytes, list[tuple[str, str]]]:
        """(status, body, extra headers); raises _Delegate to hand the request to Django."""
        started = time.perf_counter()
        host = call.META.get("HTTP_HOST", "")
        header = call.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer":
            raise _Delegate
        try:
            route = dataplane_state.route_for(host)
            if route is None:
                raise _Delegate
            call.tenant = route.tenant
            if getattr(connection, "tenant", None) is not route.tenant:
                connection.set_tenant(route.tenant)  # type: ignore[attr-defined]
            found = dataplane_state.caller_for(raw.strip())
            if found is None:
                raise _Delegate  # Django answers 401 invalid_token (and audits it)
            token_key, call.auth = found
            context = audit_context.set_context(
                AuditContext(
                    actor="anonymous",
                    source_ip=client_ip(call),  # type: ignore[arg-type]
                    user_agent=call.META.get("HTTP_USER_AGENT", "")[:300],
                    request_id=call.request_id,
                )
            )
            log_token = logcontext.bind_request(call)
            try:
                view = (api.CryptoBatchView if call.batch else api.CryptoView)(operation=call.op)
                view.kwargs = {"name": call.name}
                status, data, extra = self._answer(call, route, view)
                body = self._audit_body(call, view, status, data)
                if not dataplane_state.commit(route, call.auth, route.tenant.key_epoch, body):
                    # Revoked, suspended or rotated since cached: nothing was acknowledged.
                    dataplane_state.forget(host=host, token=token_key)
                    raise _Delegate
                if body is not None:
                    note_pending(route.tenant.schema_name)
                seconds = time.perf_counter() - started
                metrics.observe_request(call, status, seconds)  # type: ignore[arg-type]
                _log_request(call, status, seconds)  # type: ignore[arg-type]
            finally:
                logcontext.unbind_request(log_token)
                audit_context.reset_context(context)
        except (DatabaseError, CommitFailed) as exc:
            return self._database_unavailable(call, exc)
        return status, _render(data, status, call.batch), extra

    def _answer(
        self, call: Call, route: Route, view: api.CryptoView | api.CryptoBatchView
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        """The operation's (status, data, extra headers), checked as DRF's dispatch checks it:
        address limit, role, tenant, token limit, then the view's own code."""
        try:
            address = AddressRateThrottle()
            if not address.allow_request(call, view):  # type: ignore[arg-type]
                raise drf.Throttled(address.wait() or 1)  # as KcmAPIView.initial
            principal = call.auth
            audit_context.update(actor=principal.actor, role=principal.role)
            if principal.tenant_id != route.tenant.pk:
                raise WrongTenant()
            roles = view.allowed_roles
            if not principal.holds_any(roles):
                raise RoleNotAllowed(
                    f"This needs one of: {', '.join(sorted(roles))}; your roles: {principal.role}."
                )
            token = PrincipalRateThrottle()
            if not token.allow_request(call, view):  # type: ignore[arg-type]
                raise drf.Throttled(token.wait())  # as APIView.check_throttles
            return 200, view.answer(call, call.name), []  # type: ignore[arg-type]
        except Exception as exc:  # rendered exactly as Django's path renders it
            handled = api_exception_handler(exc, {"request": call, "view": view})
            if handled is None:
                raise
            extra = [(k, v) for k, v in handled.items() if k == "Retry-After"]
            return handled.status_code, handled.data, extra

    def _audit_body(
        self, call: Call, view: api.CryptoView | api.CryptoBatchView, status: int, data: Any
    ) -> str | None:
        """The event KcmAPIView.finalize_response records for this response."""
        if not settings.KCM_AUDIT_ENABLED:
            return None
        answer = _Answer(data)
        outcome, code = "success", ""
        if status >= 400:
            code = str(data.get("code", status)) if isinstance(data, dict) else str(status)
            outcome = "denied" if status in (401, 403) else "error"
        target, version = view.audit_target(call, answer)  # type: ignore[arg-type]
        return event_body(
            action=view.audit_action,
            outcome=outcome,
            target=target,
            target_version=version,
            error_code=code,
            details={
                "method": call.method,
                "path": call.path,
                **view.audit_details(call, answer),  # type: ignore[arg-type]
            },
        )

    def _database_unavailable(
        self, call: Call, exc: Exception
    ) -> tuple[int, bytes, list[tuple[str, str]]]:
        # Not worth a health check per request: a failed statement closes the connection, and
        # the next request opens a new one.
        logger.warning("data plane: database error (%s)", type(exc).__name__)
        with contextlib.suppress(DatabaseError):
            connection.close()
        unavailable = DatabaseUnavailable()
        body = problem(
            unavailable.status,
            unavailable.code,
            unavailable.title,
            unavailable.detail,
            call,  # type: ignore[arg-type]
        )
        retry = [("Retry-After", str(unavailable.retry_after))]
        return unavailable.status, _render(body, unavailable.status), retry

    def _static_headers(self, secure: bool) -> list[tuple[str, str]]:
        """What Django's security, CSP and framing middleware add to an API response, taken
        from those middleware themselves once per process."""
        cached = self._headers.get(secure)
        if cached is None:
            from csp.middleware import CSPMiddleware
            from django.middleware.clickjacking import XFrameOptionsMiddleware
            from django.middleware.security import SecurityMiddleware

            request = WSGIRequest(
                {
                    "REQUEST_METHOD": "POST",
                    "PATH_INFO": "/api/v1/",
                    "SERVER_NAME": "localhost",
                    "SERVER_PORT": "443" if secure else "80",
                    "wsgi.url_scheme": "https" if secure else "http",
                    "wsgi.input": BytesIO(b""),
                }
            )
            response = HttpResponse()
            for middleware in (SecurityMiddleware, CSPMiddleware, XFrameOptionsMiddleware):
                middleware(lambda r: response).process_response(request, response)
            response["Allow"] = "POST, OPTIONS"  # DRF's, for a view with only post()
            # Django's path reads the session on every request (the idle timeout), and says so.
            response["Vary"] = "Cookie"
            cached = [(k, v) for k, v in response.items() if k.lower() != "content-type"]
            self._headers[secure] = cached
        return cached


class _Answer:
    """The response as KcmAPIView's audit hooks read it (`.data`)."""

    def __init__(self, data: Any) -> None:
        self.data = data


def _render(data: Any, status: int, batch: bool = True) -> bytes:
    if status == 200 and not batch:  # base64 and integers only: plain json gives DRF's bytes
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return bytes(_RENDERER.render(data))


def _secure(environ: dict[str, Any]) -> bool:
    header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if header:
        name, value = header
        forwarded = environ.get(name)
        if forwarded is not None:
            return str(forwarded).split(",", 1)[0].strip() == value
    return environ.get("wsgi.url_scheme") == "https"


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
