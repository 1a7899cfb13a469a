"""Shared fixtures: a world of two tenants with a user and an API token for every role.

The world is created once per session (committed); each test then runs in a transaction
that is rolled back. Requests go through Django's test client with a `Host:` header, so
tenant routing, middleware, authentication and CSRF are the real ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection

from apps.core.roles import TENANT_ROLES, Role
from apps.tenants import services
from apps.tenants.grants import KeyGrant
from apps.tenants.models import Tenant
from apps.tenants.tokens import api_token_create
from tests.helpers import Api, host_of

TENANTS = ("acme", "globex")
PASSWORD = "correct horse battery staple 42"


@dataclass
class World:
    tenants: dict[str, Tenant] = field(default_factory=dict)
    users: dict[tuple[str, str], User] = field(default_factory=dict)
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)


_WORLD = World()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    with django_db_blocker.unblock():
        _build_world()
    yield
    # The key-chain listener holds a connection to the test database, which is dropped next.
    from apps.audit.sealer import stop_sealer
    from apps.keychain.cache import stop_listener

    stop_listener()
    stop_sealer()


def _build_world() -> None:
    call_command("kcm_migrate", verbosity=0)
    platform = Tenant.objects.get(schema_name="public")
    _WORLD.tenants["platform"] = platform
    operator = services.user_create(username="operator", password=PASSWORD)
    services.membership_set(tenant=platform, user=operator, roles=[Role.PLATFORM_OPERATOR])
    _WORLD.users[("platform", Role.PLATFORM_OPERATOR)] = operator
    _, _WORLD.tokens[("platform", Role.PLATFORM_OPERATOR)] = api_token_create(
        tenant=platform, name="ops", role=Role.PLATFORM_OPERATOR, created_by_id=operator.pk
    )
    for slug in TENANTS:
        tenant = services.tenant_create(slug=slug, name=slug.title())
        _WORLD.tenants[slug] = tenant
        for role in TENANT_ROLES:
            user = services.user_create(username=f"{slug}-{role}", password=PASSWORD)
            # Each user holds its one role; key users (and their tokens) may use every key.
            grant = KeyGrant.everything() if role == Role.KEY_USER else None
            services.membership_set(tenant=tenant, user=user, roles=[role], key_grant=grant)
            _WORLD.users[(slug, role)] = user
            _, _WORLD.tokens[(slug, role)] = api_token_create(
                tenant=tenant,
                name=f"{role} token",
                role=role,
                created_by_id=user.pk,
                key_grant=grant,
            )


@pytest.fixture
def world(db: None) -> World:
    return _WORLD


@pytest.fixture(autouse=True)
def _fresh_process_state() -> Iterator[None]:
    from apps.core.throttling import buckets
    from apps.keychain.cache import key_cache
    from apps.keychain.dataplane_state import caches

    # The data plane's routes hold tenants at key epochs that rolled back with their test.
    for reset in (key_cache().reset, buckets.reset, caches.clear):
        reset()
    yield
    connection.set_schema_to_public()  # type: ignore[attr-defined]
    for reset in (key_cache().reset, buckets.reset, caches.clear):
        reset()


@pytest.fixture
def api(world: World) -> Any:
    """api(slug, role) -> an Api on that tenant's host with that role's token."""

    def make(slug: str, role: str | None = None, *, on: str | None = None) -> Api:
        token = world.tokens[(slug, role)] if role else None
        return Api(host_of(on or slug), token)

    return make
