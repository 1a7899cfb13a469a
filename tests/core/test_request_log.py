"""Each request ends in one log line naming its id, tenant, principal, route, status and
duration (apps.core.middleware, apps.core.logcontext); the id is the caller's when well formed.

The live, JSON-formatted version of this (gunicorn, Celery, secrets searched for) is
tests/security/test_log_secrets.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from apps.core.logcontext import ContextFilter
from apps.core.roles import Role


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(ContextFilter())  # as on the handler of kms_project/logconfig.py

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def request_lines() -> Iterator[list[logging.LogRecord]]:
    handler = _Collect()
    logger = logging.getLogger("kcm.request")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


def test_it_sums_up_a_request_by_route_with_its_principal(
    api: Any, world: Any, request_lines: list[logging.LogRecord]
) -> None:
    response = api("acme", Role.KEY_ADMIN).get("/api/v1/me/")
    assert response.status_code == 200
    (line,) = request_lines
    token_id = world.tokens[("acme", Role.KEY_ADMIN)].split("_")[1]
    assert (
        vars(line).items()
        >= {
            "route": "api:me",
            "method": "GET",
            "status": 200,
            "tenant": "acme",
            "principal": f"token:{token_id}",
            "request_id": response["X-Request-Id"],
        }.items()
    )
    assert line.levelno == logging.INFO and line.duration_ms >= 0  # type: ignore[attr-defined]


def test_it_keeps_a_well_formed_request_id_and_replaces_another(
    api: Any, request_lines: list[logging.LogRecord]
) -> None:
    kept = api("acme", Role.KEY_ADMIN).get("/api/v1/me/", x_request_id="trace-42.a:b")
    replaced = api("acme", Role.KEY_ADMIN).get("/api/v1/me/", x_request_id="no spaces <here>")
    assert kept["X-Request-Id"] == "trace-42.a:b"
    assert replaced["X-Request-Id"] not in ("", "no spaces <here>")
    assert [line.request_id for line in request_lines] == [  # type: ignore[attr-defined]
        "trace-42.a:b",
        replaced["X-Request-Id"],
    ]


def test_a_refused_request_is_logged_as_anonymous_with_its_status(
    api: Any, request_lines: list[logging.LogRecord]
) -> None:
    response = api("acme").get("/api/v1/me/")
    assert response.status_code == 401
    (line,) = request_lines
    assert (line.status, line.principal, line.tenant) == (401, "anonymous", "acme")  # type: ignore[attr-defined]
    assert response.json_body["request_id"] == line.request_id  # type: ignore[attr-defined]
