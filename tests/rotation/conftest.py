from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django_tenants.utils import tenant_context

from apps.core.roles import Role
from apps.keychain.models import CustomerKey, TenantKey
from apps.tenants.models import Tenant
from tests.e2e import rotationkit
from tests.helpers import Api


@dataclass
class Chain:
    tenant: Tenant
    admin: Api
    user: Api
    l1_id: str
    l2_id: str
    names: list[str]  # the service keys, "payments" first

    def inside(self) -> Any:
        """`with chain.inside():` runs in the tenant's schema."""
        return tenant_context(self.tenant)


@pytest.fixture
def make_chain(api: Any, world: Any) -> Iterator[Any]:
    """make_chain(slug, service_keys=n): L1 'root' → L2 → L3 'payments' plus n-1 bulk keys."""

    def make(slug: str = "acme", service_keys: int = 1) -> Chain:
        admin: Api = api(slug, Role.KEY_ADMIN)
        made = admin.post("/api/v1/customer-keys/", {"name": "root"})
        assert made.status_code == 201, made.content
        assert admin.post("/api/v1/service-keys/", {"name": "payments"}).status_code == 201
        tenant = world.tenants[slug]
        with tenant_context(tenant):
            names = ["payments", *rotationkit.bulk_service_keys(service_keys - 1)]
            l2_id = str(TenantKey.objects.get().pk)
            l1_id = str(CustomerKey.objects.get().pk)
        return Chain(tenant, admin, api(slug, Role.KEY_USER), l1_id, l2_id, names)

    yield make
