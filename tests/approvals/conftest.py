"""Approvals fixtures: extra key admins (each with a user and a token) and an L1 to act on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User

from apps.core.roles import Role
from apps.tenants import services
from apps.tenants.tokens import api_token_create
from tests.conftest import PASSWORD, World
from tests.helpers import Api, host_of

# The KMIP server and HYOK helpers of tests/keychain, for test_hyok.py.
from tests.keychain.conftest import customer, hyok_api, kmip, kmip_server  # noqa: F401


@dataclass
class Admin:
    user: User
    api: Api


@dataclass
class Setup:
    requester: Api  # the world's acme key admin
    approvers: list[Admin]  # three more acme key admins
    tenant_admin: Api
    auditor: Api
    l1: str

    def policy(self, **body: Any) -> Any:
        return self.tenant_admin.call("PUT", "/api/v1/approvals/policy/", {"required": 2, **body})


def add_key_admin(world: World, slug: str, name: str) -> Admin:
    tenant = world.tenants[slug]
    user = services.user_create(username=name, password=PASSWORD)
    services.membership_set(tenant=tenant, user=user, roles=[Role.KEY_ADMIN])
    _, token = api_token_create(
        tenant=tenant, name=f"{name} token", role=Role.KEY_ADMIN, created_by_id=user.pk
    )
    return Admin(user, Api(host_of(slug), token))


@pytest.fixture
def setup(api: Any, world: World) -> Setup:
    requester = api("acme", Role.KEY_ADMIN)
    made = requester.post("/api/v1/customer-keys/", {"name": "root"})
    assert made.status_code == 201, made.content
    return Setup(
        requester=requester,
        approvers=[add_key_admin(world, "acme", f"approver-{n}") for n in range(3)],
        tenant_admin=api("acme", Role.TENANT_ADMIN),
        auditor=api("acme", Role.AUDITOR),
        l1=made.json_body["id"],
    )
