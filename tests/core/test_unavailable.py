"""A lost database and a missing broker folder are answered as what they are: 503s with a
stable code, and a Celery consumer that waits (tests/e2e/test_faults_*.py do it for real)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from amqp.exceptions import ConnectionError as BrokerConnectionError
from django.db import IntegrityError, OperationalError
from django.test import RequestFactory
from kombu import Connection

from apps.core.views import server_error


def _handled(exc: Exception, path: str) -> Any:
    try:
        raise exc
    except Exception:  # Django calls handler500 while handling the exception
        return server_error(RequestFactory().get(path))


def test_it_answers_a_lost_database_connection_with_503_database_unavailable() -> None:
    response = _handled(OperationalError("server closed the connection"), "/api/v1/keys/")
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    body = json.loads(response.content)
    assert body["code"] == "database_unavailable"
    assert "server closed" not in response.content.decode()


def test_it_renders_the_console_page_without_touching_the_database() -> None:
    response = _handled(OperationalError("down"), "/keys/")
    assert response.status_code == 503
    assert b"The database is unavailable" in response.content


def test_it_keeps_other_database_errors_internal() -> None:
    response = _handled(IntegrityError("duplicate key"), "/api/v1/keys/")
    assert response.status_code == 500


@pytest.fixture
def channel(tmp_path: Path) -> Iterator[tuple[Path, Any]]:
    import kms_project.broker  # noqa: F401  (registers kcmfs)

    queue = tmp_path / "queue"
    queue.mkdir()
    options = {"data_folder_in": str(queue), "data_folder_out": str(queue)}
    with Connection("kcmfs://", transport_options=options) as connection:
        yield queue, connection.default_channel


def test_a_consumer_finds_an_empty_queue_while_the_broker_folder_is_gone(
    channel: tuple[Path, Any],
) -> None:
    queue, chan = channel
    chan._put("celery", {"body": "one"})
    queue.rename(queue.with_name("away"))
    with pytest.raises(Empty):
        chan._get("celery")
    queue.with_name("away").rename(queue)
    assert chan._get("celery") == {"body": "one"}


def test_a_publisher_gets_a_connection_error_while_the_broker_folder_is_gone(
    channel: tuple[Path, Any],
) -> None:
    queue, chan = channel
    queue.rmdir()
    with pytest.raises(BrokerConnectionError):
        chan._put("celery", {"body": "lost"})
