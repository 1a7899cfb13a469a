"""Error pages of every host: a problem for the API, the refusal page for the console."""

import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string

from apps.core.errors import DatabaseUnavailable, problem_response


def _error(request: HttpRequest, status: int, code: str, title: str, detail: str) -> HttpResponse:
    if request.path.startswith("/api/"):
        return problem_response(status, code, title, detail, request)
    return render(
        request, "console/refused.html", {"title": title, "detail": detail}, status=status
    )


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _error(request, 404, "not_found", "Not found", "There is nothing at this address.")


def forbidden(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _error(request, 403, "forbidden", "Forbidden", "You are not allowed to see this page.")


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _error(
        request, 400, "bad_request", "Bad request", "The request could not be understood."
    )


def server_error(request: HttpRequest) -> HttpResponse:
    # Django calls this while handling the exception; a lost or refused database connection
    # (PostgreSQL restarting) is a 503 the client retries, not a bug.
    if isinstance(sys.exc_info()[1], OperationalError | InterfaceError):
        return database_unavailable(request)
    return _error(
        request, 500, "internal_error", "Internal error", "Something went wrong; it was logged."
    )


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    return _error(
        request, 403, "csrf_failed", "Forbidden", "The form expired or did not come from this site."
    )


def database_unavailable(request: HttpRequest) -> HttpResponse:
    """503 `database_unavailable`, rendered without touching the database (no context
    processors, no session): the console page is the bare refusal page."""
    unavailable = DatabaseUnavailable()
    if request.path.startswith("/api/"):
        response: HttpResponse = problem_response(
            unavailable.status, unavailable.code, unavailable.title, unavailable.detail, request
        )
    else:
        page = render_to_string(
            "console/refused.html", {"title": unavailable.title, "detail": unavailable.detail}
        )
        response = HttpResponse(page, status=unavailable.status)
    response["Retry-After"] = str(unavailable.retry_after)
    return response
