"""Finding 6 (issue 11): probes answer on every host and address, disclose nothing, and do not
touch the HSM or the broker on every call; the details are for platform operators only."""

from __future__ import annotations

from unittest import mock

import pytest
from django.conf import settings
from django.test import Client

from kms_project import health
from tests.conftest import World
from tests.helpers import Api, assert_problem, host_of


def _secrets() -> list[str]:
    """What a probe must never show an anonymous caller."""
    db = settings.DATABASES["default"]
    return [str(db["NAME"]), str(db.get("HOST") or "/"), "Error", "softhsm", "token"]


@pytest.fixture(autouse=True)
def _fresh_readiness() -> None:
    health.ready_cache.clear()  # each test sees a fresh verdict, not its predecessor's


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.2.3:8000", "no-such.example", "localhost"])
@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_answer_on_any_host(world: World, host: str, path: str) -> None:
    response = Client().get(path, HTTP_HOST=host)
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"] == "application/json"


def test_liveness_says_only_ok(world: World) -> None:
    assert Client().get("/healthz", HTTP_HOST="acme.localhost").json() == {"status": "ok"}


def test_readiness_shows_booleans_and_nothing_else(world: World) -> None:
    response = Client().get("/readyz", HTTP_HOST="127.0.0.1")
    body = response.json()
    assert body == {"status": "ok", "checks": {"database": True, "broker": True, "hsm": True}}
    for secret in _secrets():
        assert secret not in response.content.decode()


def test_a_failing_check_is_reported_without_its_error_text(world: World) -> None:
    boom = RuntimeError("cannot open /secret/path/kcm.keys for db kcm_prod")
    with mock.patch.object(health, "platform_keystore_health", side_effect=boom):
        response = Client().get("/readyz", HTTP_HOST="localhost")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": True, "broker": True, "hsm": False}
    assert b"secret" not in response.content and b"kcm_prod" not in response.content


def test_readiness_touches_the_hsm_and_broker_at_most_once_a_second(world: World) -> None:
    with (
        mock.patch.object(
            health, "platform_keystore_health", wraps=health.platform_keystore_health
        ) as hsm,
        mock.patch.object(
            health.app, "connection_for_write", wraps=health.app.connection_for_write
        ) as broker,
    ):
        for _ in range(20):
            assert Client().get("/readyz", HTTP_HOST="127.0.0.1").status_code == 200
    assert hsm.call_count == 1 and broker.call_count == 1


def test_details_are_for_platform_operators_only(world: World) -> None:
    operator = Api(host_of("platform"), world.tokens[("platform", "platform_operator")])
    report = operator.get("/api/v1/platform/health/")
    assert report.status_code == 200
    assert report.json_body["checks"]["database"]["name"] == settings.DATABASES["default"]["NAME"]
    assert_problem(
        Api(host_of("platform")).get("/api/v1/platform/health/"), 401, "not_authenticated"
    )
    admin = Api(host_of("acme"), world.tokens[("acme", "tenant_admin")])
    assert admin.get("/api/v1/platform/health/").status_code == 404
