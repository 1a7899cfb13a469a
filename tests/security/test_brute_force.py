"""Finding 5 (issue 11): no brute force. Console sign-in locks out a username and a client
address after KCM_LOGIN_FAILURE_LIMIT failures, even for the right password; failures are
audited without waiting on the audit chain's lock; the API limits requests per token and per
address with 429, Retry-After and problem+json code `throttled`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client

from apps.core.throttling import buckets
from tests.conftest import PASSWORD, World
from tests.helpers import Api, assert_problem, host_of

HOST = "acme.localhost"


@pytest.fixture(autouse=True)
def _fresh_counts() -> Iterator[None]:
    cache.clear()  # django-axes' counts
    buckets.reset()  # the API's rate limits
    yield
    cache.clear()
    buckets.reset()


def _sign_in(username: str, password: str, address: str = "127.0.0.1") -> Any:
    return Client(REMOTE_ADDR=address).post(
        "/login/", {"username": username, "password": password}, HTTP_HOST=HOST
    )


def test_thirty_wrong_passwords_lock_the_account_even_for_the_right_one(
    world: World, settings: Any
) -> None:
    username = world.users[("acme", "tenant_admin")].username
    answers = [
        _sign_in(username, f"guess-{i}", address=f"198.51.100.{i + 1}").status_code
        for i in range(30)
    ]
    limit = settings.KCM_LOGIN_FAILURE_LIMIT
    assert answers[: limit - 1] == [400] * (limit - 1)
    assert set(answers[limit - 1 :]) == {429}
    locked = _sign_in(username, PASSWORD, address="198.51.100.200")
    assert locked.status_code == 429
    assert int(locked["Retry-After"]) == settings.KCM_LOGIN_LOCKOUT_SECONDS
    assert "_auth_user_id" not in locked.client.session
    # Another account is not locked by it.
    other = world.users[("acme", "key_admin")].username
    assert _sign_in(other, PASSWORD, address="198.51.100.201").status_code == 302


def test_one_address_trying_many_usernames_is_locked_out(world: World, settings: Any) -> None:
    for i in range(settings.KCM_LOGIN_FAILURE_LIMIT - 1):
        assert _sign_in(f"nobody-{i}", "guess", address="203.0.113.7").status_code == 400
    # The failure that reaches the limit is answered with the lockout already.
    assert _sign_in("nobody-else", "guess", address="203.0.113.7").status_code == 429
    username = world.users[("acme", "auditor")].username
    assert _sign_in(username, PASSWORD, address="203.0.113.7").status_code == 429
    assert _sign_in(username, PASSWORD, address="203.0.113.8").status_code == 302


def test_a_failed_sign_in_does_not_wait_for_the_audit_chain_lock(world: World) -> None:
    schema = world.tenants["acme"].schema_name
    params = connection.settings_dict
    holder = psycopg.connect(
        dbname=params["NAME"],
        user=params["USER"],
        host=params["HOST"],
        port=params["PORT"] or None,
        password=params["PASSWORD"] or None,
    )
    try:
        holder.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"{schema}.kcm_audit"])
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '3s'")
        assert _sign_in("nobody", "guess").status_code == 400
    finally:
        holder.rollback()
        holder.close()


def test_api_requests_over_the_token_limit_get_429_throttled(world: World, settings: Any) -> None:
    settings.KCM_API_RATE_PER_TOKEN = "3/min"
    api = Api(host_of("acme"), world.tokens[("acme", "auditor")])
    assert [api.get("/api/v1/me/").status_code for _ in range(3)] == [200] * 3
    refused = api.get("/api/v1/me/")
    assert_problem(refused, 429, "throttled")
    assert 0 < int(refused["Retry-After"]) <= 60
    # Another token of the same address is not limited by this one's use.
    other = Api(host_of("acme"), world.tokens[("acme", "key_admin")])
    assert other.get("/api/v1/me/").status_code == 200


def test_guessing_tokens_from_one_address_gets_429_throttled(world: World, settings: Any) -> None:
    settings.KCM_API_RATE_PER_ADDRESS = "5/min"
    guesser = Api(host_of("acme"), "kcm_guessed-token")
    for _ in range(5):
        assert_problem(guesser.get("/api/v1/me/"), 401, "invalid_token")
    refused = guesser.get("/api/v1/me/")
    assert_problem(refused, 429, "throttled")
    assert int(refused["Retry-After"]) > 0
