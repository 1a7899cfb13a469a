"""Domain errors and their single rendering: RFC 9457 problem+json in the API.

Services raise `KcmError` subclasses with a stable `code`; the API exception handler and the
console both render them. Codes are part of the API contract: never rename one.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response

PROBLEM_CONTENT_TYPE = "application/problem+json"


class KcmError(Exception):
    """A failure a client can act on: stable `code`, HTTP `status`, human `detail`."""

    status = 400
    code = "bad_request"
    title = "Bad request"

    def __init__(self, detail: str | None = None, *, code: str | None = None, **extra: Any):
        self.detail = detail or self.title
        if code is not None:
            self.code = code
        self.extra = extra
        super().__init__(self.detail)


class ValidationFailed(KcmError):
    status = 400
    code = "validation_error"
    title = "The request is not valid"


class NotFound(KcmError):
    status = 404
    code = "not_found"
    title = "Not found"


class Forbidden(KcmError):
    status = 403
    code = "forbidden"
    title = "You are not allowed to do this"


class Conflict(KcmError):
    status = 409
    code = "conflict"
    title = "The resource is in a state that does not allow this"


class ServiceUnavailable(KcmError):
    status = 503
    code = "unavailable"
    title = "A dependency is unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    """PostgreSQL refused or lost the connection (restarting, down, unreachable): the request
    changed nothing that was acknowledged; retrying shortly is safe (docs/operations.md)."""

    code = "database_unavailable"
    title = "The database is unavailable"
    retry_after = 1

    def __init__(self, detail: str | None = None, **extra: Any):
        super().__init__(detail or "The database did not answer; retry shortly.", **extra)


class BrokerUnavailable(ServiceUnavailable):
    """The task broker refused a job that cannot wait for it (docs/operations.md, Faults)."""

    code = "broker_unavailable"
    title = "The job queue is unavailable"
    retry_after = 5

    def __init__(self, detail: str | None = None, **extra: Any):
        super().__init__(
            detail or "The job could not be queued; nothing will run it. Try again shortly.",
            **extra,
        )


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    request: HttpRequest | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"urn:kcm:problem:{code}",
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
    }
    if request is not None:
        body["instance"] = request.path
        request_id = getattr(request, "request_id", None)
        if request_id:
            body["request_id"] = request_id
    body.update(extra)
    return body


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    request: HttpRequest | None = None,
    **extra: Any,
) -> JsonResponse:
    return JsonResponse(
        problem(status, code, title, detail, request, **extra),
        status=status,
        content_type=PROBLEM_CONTENT_TYPE,
    )


_DRF_CODES: dict[type[drf.APIException], tuple[str, str]] = {
    drf.ParseError: ("malformed_request", "The request body could not be parsed"),
    drf.UnsupportedMediaType: ("unsupported_media_type", "Unsupported media type"),
    drf.NotAuthenticated: ("not_authenticated", "Authentication required"),
    drf.AuthenticationFailed: ("authentication_failed", "Authentication failed"),
    drf.PermissionDenied: ("forbidden", "You are not allowed to do this"),
    drf.NotFound: ("not_found", "Not found"),
    drf.MethodNotAllowed: ("method_not_allowed", "Method not allowed"),
    drf.NotAcceptable: ("not_acceptable", "Not acceptable"),
    drf.Throttled: ("throttled", "Too many requests"),
    drf.ValidationError: ("validation_error", "The request is not valid"),
}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler: every error becomes problem+json with a stable code."""
    # Imported here: rest_framework.views imports this module's users at import time.
    from rest_framework.views import exception_handler as drf_default_handler

    request = context.get("request")
    django_request = getattr(request, "_request", request)
    if isinstance(exc, KcmError):
        body = problem(exc.status, exc.code, exc.title, exc.detail, django_request, **exc.extra)
        refusal = Response(body, status=exc.status, content_type=PROBLEM_CONTENT_TYPE)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            refusal["Retry-After"] = str(retry_after)
        return refusal
    if isinstance(exc, RequestDataTooBig):
        body = problem(413, "payload_too_large", "Payload too large", str(exc), django_request)
        return Response(body, status=413, content_type=PROBLEM_CONTENT_TYPE)
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf.PermissionDenied()
    elif isinstance(exc, SuspiciousOperation):
        exc = drf.ParseError(str(exc))
    response = drf_default_handler(exc, context)
    if response is None or not isinstance(exc, drf.APIException):
        return response
    code, title = next(
        (value for cls, value in _DRF_CODES.items() if isinstance(exc, cls)),
        ("error", "Error"),
    )
    extra: dict[str, Any] = {}
    if isinstance(exc, drf.ValidationError):
        extra["errors"] = exc.detail
        detail = "One or more fields are invalid; see `errors`."
    else:
        detail = str(exc.detail)
    body = problem(response.status_code, code, title, detail, django_request, **extra)
    response.data = body
    response.content_type = PROBLEM_CONTENT_TYPE
    return response
