"""Finding 9 (issue 11), client address: X-Forwarded-For is believed only from configured
trusted proxies, and the audit log records the real client."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connection
from django.test import RequestFactory

from apps.core.clientip import client_ip
from tests.conftest import World
from tests.helpers import Api, assert_problem, host_of


def _ip(remote: str, forwarded: str | None = None) -> str:
    extra: dict[str, Any] = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return client_ip(RequestFactory().get("/", **extra))


def test_without_trusted_proxies_the_header_is_ignored(settings: Any) -> None:
    settings.KCM_TRUSTED_PROXIES = []
    assert _ip("203.0.113.9", "198.51.100.1") == "203.0.113.9"


def test_a_trusted_proxy_names_the_client(settings: Any) -> None:
    settings.KCM_TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert _ip("10.0.0.2", "198.51.100.1") == "198.51.100.1"
    # Entries left of the first untrusted hop were written by the client: not believed.
    assert _ip("10.0.0.2", "1.2.3.4, 198.51.100.1, 10.0.0.7") == "198.51.100.1"
    assert _ip("10.0.0.2", "garbage, 198.51.100.1") == "198.51.100.1"


def test_an_untrusted_peer_cannot_forge_its_address(settings: Any) -> None:
    settings.KCM_TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert _ip("203.0.113.9", "10.0.0.1") == "203.0.113.9"


def source_ips(schema: str, user_agent: str) -> list[str]:
    """The source address of the events sent with `user_agent`, chained or still pending."""
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT host(source_ip) FROM "{schema}".audit_auditevent WHERE user_agent = %s '
            f"UNION ALL SELECT body::jsonb->>'source_ip' FROM \"{schema}\".audit_auditpending "
            "WHERE body::jsonb->>'user_agent' = %s",
            [user_agent, user_agent],
        )
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.parametrize(
    ("trusted", "expected"), [([], "127.0.0.1"), (["127.0.0.1"], "198.51.100.23")]
)
def test_the_audit_log_records_the_real_client(
    world: World, settings: Any, trusted: list[str], expected: str
) -> None:
    settings.KCM_TRUSTED_PROXIES = trusted
    api = Api(host_of("acme"), "kcm_not-a-valid-token")
    agent = f"client-address-test-{uuid.uuid4()}"
    response = api.get("/api/v1/me/", X_FORWARDED_FOR="198.51.100.23", USER_AGENT=agent)
    assert_problem(response, 401, "invalid_token")
    assert source_ips(world.tenants["acme"].schema_name, agent) == [expected]
