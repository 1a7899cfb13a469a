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
from apps.keychain import dataplane_state
from apps.keychain.cache import key_cache
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


def _heard_kill_switch(world: Any) -> int:
    """Another process's kill switch, and its notification heard here (as the listener does):
    the new epoch, committed."""
    from django.db.models import F

    acme = world.tenants["acme"]
    Tenant.objects.filter(pk=acme.pk).update(key_epoch=F("key_epoch") + 1)
    epoch = Tenant.objects.values_list("key_epoch", flat=True).get(pk=acme.pk)
    key_cache().invalidate(acme.schema_name, epoch)
    return epoch


def test_a_request_under_way_when_the_kill_switch_is_heard_cannot_commit(
    cached: Any, world: Any
) -> None:
    """A heard epoch moves the cached route to it (so the refusals that follow are answered by
    the data plane), but never the route a request already holds: a request whose answer was
    worked out with the keys of before must still fail its commit."""
    user, _ = cached
    host = host_of("acme")
    under_way = dataplane_state.route_for(host)
    assert under_way is not None
    before = under_way.tenant.key_epoch
    epoch = _heard_kill_switch(world)
    moved = dataplane_state.route_for(host)  # the next request's
    assert moved is not None and moved.tenant.key_epoch == epoch
    principal = dataplane_state.caller_for(user.token)
    assert principal is not None
    # The request under way commits with the epoch of its route.
    assert under_way.tenant.key_epoch == before
    assert not dataplane_state.commit(under_way, principal[1], under_way.tenant.key_epoch, "{}")
    assert dataplane_state.commit(moved, principal[1], moved.tenant.key_epoch, "{}")


def test_a_heard_epoch_does_not_outlive_a_suspension(cached: Any, world: Any) -> None:
    """The route moved to a heard epoch without reading the tenant: the commit still checks
    its status in the database."""
    user, _ = cached
    _heard_kill_switch(world)
    Tenant.objects.filter(pk=world.tenants["acme"].pk).update(status=TenantStatus.SUSPENDED)
    assert_problem(user.post(GENERATE, {}), 403, "tenant_suspended")
    assert user.client.served[-1] is False


def test_an_epoch_moved_on_past_the_one_heard_is_read_afresh(cached: Any, world: Any) -> None:
    """Heard N, but the database is at N+1 already (a second kill switch not yet heard): the
    request at N fails its commit and Django's path serves it at N+1."""
    user, _ = cached
    from django.db.models import F

    _heard_kill_switch(world)
    Tenant.objects.filter(pk=world.tenants["acme"].pk).update(key_epoch=F("key_epoch") + 1)
    assert user.post(GENERATE, {}).status_code == 200
    assert user.client.served[-1] is False
