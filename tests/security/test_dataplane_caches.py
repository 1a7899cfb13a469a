"""The data plane caches a Host's tenant and a token's principal; no cache entry may keep a
credential or a route working once the database says otherwise (apps/keychain/dataplane_state).
Each test first makes the data plane cache the entry, then changes the row behind its back
(as another process would), and expects the very next request to be refused."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.core.roles import Role
from apps.tenants.grants import KeyGrant
from apps.tenants.models import ApiToken, Domain, Tenant, TenantStatus
from apps.tenants.tokens import api_token_create
from tests.helpers import Api, assert_problem, host_of
from tests.keychain.dataplanekit import PlaneClient

GENERATE = "/api/v1/service-keys/payments/generate-data-key/"


@pytest.fixture
def cached(world: Any, api: Any) -> Any:
    """(Api through the data plane with a fresh key-user token of acme, the token row), after
    one successful request that cached both the token and the tenant."""
    admin = api("acme", Role.KEY_ADMIN)
    assert admin.post("/api/v1/customer-keys/", {"name": "root"}).status_code == 201
    assert admin.post("/api/v1/service-keys/", {"name": "payments"}).status_code == 201
    token, raw = api_token_create(
        tenant=world.tenants["acme"],
        name="cached",
        role=Role.KEY_USER,
        created_by_id=None,
        key_grant=KeyGrant.everything(),
    )
    client = PlaneClient(HTTP_HOST=host_of("acme"))
    user = Api(host_of("acme"), raw, client)
    assert user.post(GENERATE, {}).status_code == 200
    assert client.served == [True]
    return user, token


def test_a_cached_token_that_expires_stops_working(cached: Any) -> None:
    user, token = cached
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert_problem(user.post(GENERATE, {}), 401, "invalid_token")


def test_a_cached_token_revoked_elsewhere_stops_working(cached: Any) -> None:
    user, token = cached
    # Another process revokes it: this process hears nothing; the next statement sees it.
    ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    assert_problem(user.post(GENERATE, {}), 401, "invalid_token")
    assert_problem(user.post(GENERATE, {}), 401, "invalid_token")


def test_a_cached_tenant_suspended_elsewhere_stops_answering(cached: Any, world: Any) -> None:
    user, _ = cached
    Tenant.objects.filter(pk=world.tenants["acme"].pk).update(status=TenantStatus.SUSPENDED)
    assert_problem(user.post(GENERATE, {}), 403, "tenant_suspended")


def test_a_cached_route_whose_domain_moved_is_not_used(cached: Any, world: Any) -> None:
    user, _ = cached
    Domain.objects.filter(domain=host_of("acme")).update(tenant=world.tenants["globex"])
    # The Host now routes to globex, where acme's token is a foreign tenant's.
    assert_problem(user.post(GENERATE, {}), 403, "wrong_tenant")


def test_a_key_epoch_bumped_elsewhere_is_noticed_at_once(cached: Any, world: Any) -> None:
    user, _ = cached
    from django.db.models import F

    # The kill switch of another process (its NOTIFY not heard here): the cached tenant's
    # epoch is stale, so the request is served afresh, and the new epoch drops cached keys.
    Tenant.objects.filter(pk=world.tenants["acme"].pk).update(key_epoch=F("key_epoch") + 1)
    assert user.post(GENERATE, {}).status_code == 200
    assert user.client.served[-1] is False  # handed to Django's path, which read it afresh
    assert user.post(GENERATE, {}).status_code == 200
    assert user.client.served[-1] is True  # cached again, at the new epoch
