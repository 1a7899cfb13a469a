"""A live KCM (gunicorn, a solo Celery worker, own database) per test module, with tenants
'acme' (chain root → payments) and 'other' (its own chain with a service key of the same
name), each with a key admin, a key user and an auditor token."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kcm_client import Client, DataKeyCache

from tests.e2e.stack import LiveStack
from tests.e2e.tenantkit import KEY_ADMIN, KEY_USER, Tenant, create_chain, provision_tenant

AUDITOR = "auditor"
ROLES = (KEY_ADMIN, KEY_USER, AUDITOR)


@dataclass
class Kcm:
    stack: LiveStack
    acme: Tenant
    other: Tenant
    l1_id: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.stack.port}"

    def host(self, tenant: Tenant) -> str:
        return f"{tenant.host}:{self.stack.port}"

    def client(
        self, tenant: Tenant | None = None, role: str = KEY_USER, cache: DataKeyCache | None = None,
        **options: object,
    ) -> Client:  # fmt: skip
        tenant = tenant or self.acme
        return Client(
            self.url, tenant.tokens[role], host_header=self.host(tenant), cache=cache,
            **options,  # type: ignore[arg-type]
        )  # fmt: skip


@pytest.fixture(scope="module")
def kcm() -> Iterator[Kcm]:
    with LiveStack(celery_pool="solo") as stack:
        acme = provision_tenant(stack, "acme", ROLES)
        other = provision_tenant(stack, "other", ROLES)
        l1_id = create_chain(stack, acme)
        create_chain(stack, other)
        yield Kcm(stack, acme, other, l1_id)
