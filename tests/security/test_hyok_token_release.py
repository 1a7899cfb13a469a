"""Issue 11, finding 1, continued: a customer's PKCS#11 token serves one tenant at a time
(`TokenClaim`). When that tenant ends, or removes the key manager that registered the token,
the registration is released, so that the customer can link the token from another tenant;
never while the first tenant's keys still use it. A real second SoftHSM2 token."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from django_tenants.utils import tenant_context

from apps.core.roles import Role
from apps.keychain import hyok
from apps.keychain import services as keychain_services
from apps.keystores.models import TokenClaim
from apps.keystores.registry import forget_connections
from apps.tenants import services as tenant_services
from tests.helpers import assert_problem
from tests.keychain.test_hyok_pkcs11 import CustomerToken, Hyok


@pytest.fixture(scope="module")
def token() -> Iterator[CustomerToken]:
    created = CustomerToken()
    yield created
    created.delete()


@pytest.fixture
def globex(api: Any, token: CustomerToken, settings: Any) -> Iterator[Hyok]:
    """globex's key admin, about to link keys of the customer's token."""
    settings.KCM_HYOK_TIMEOUT_SECONDS = 1
    forget_connections()
    linker = Hyok(api, token)
    linker.admin = api("globex", Role.KEY_ADMIN)
    yield linker
    forget_connections()


def _new_key(token: CustomerToken) -> str:
    return token.create_key(f"k-{secrets.token_hex(3)}")


def _owners(token: CustomerToken) -> list[str]:
    return list(TokenClaim.objects.values_list("owner", flat=True))


def test_a_terminated_tenants_token_can_be_linked_by_another_tenant(
    world: Any, globex: Hyok, token: CustomerToken
) -> None:
    leaver = tenant_services.tenant_create(slug="leaver")
    with tenant_context(leaver):
        manager = hyok.key_manager_create(
            name="own hsm",
            kind="pkcs11",
            config={"library": token.library, "token_label": token.label},
            credentials={"pin": token.pin},
        )
        hyok.customer_key_create_hyok(
            name="held", manager_id=manager.pk, external_key_id=_new_key(token)
        )
    connection.set_schema_to_public()  # type: ignore[attr-defined]
    assert _owners(token) == [str(leaver.uid)]
    refused = globex.link(_new_key(token))
    assert_problem(refused, 400, "external_key_invalid")
    assert "another tenant" in refused.json_body["detail"]

    # Made in this test's transaction: check the deferred foreign keys before the schema goes.
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    tenant_services.tenant_terminate(tenant=leaver, reason="contract ended")

    assert _owners(token) == []
    linked = globex.link(_new_key(token))
    assert linked.status_code == 201, linked.content
    assert _owners(token) == [str(world.tenants["globex"].uid)]


def test_deleting_its_key_manager_releases_the_token_once_no_key_uses_it(
    world: Any, api: Any, globex: Hyok, token: CustomerToken
) -> None:
    acme = Hyok(api, token)
    manager_id = acme.manager()["id"]
    l1 = acme.link(_new_key(token), manager_id=manager_id)
    assert l1.status_code == 201, l1.content
    url = f"/api/v1/key-managers/{manager_id}/"

    in_use = acme.admin.call("DELETE", url)
    assert_problem(in_use, 409, "key_manager_in_use")
    assert "held" in in_use.json_body["detail"]
    assert api("acme", Role.AUDITOR).call("DELETE", url).status_code == 403
    assert_problem(globex.admin.call("DELETE", url), 404, "key_manager_not_found")
    assert_problem(globex.link(_new_key(token)), 400, "external_key_invalid")

    # The key that used it is deleted and destroyed: nothing needs the manager any more.
    key_id = l1.json_body["id"]
    scheduled = acme.admin.post(f"/api/v1/keys/{key_id}/schedule-deletion/", {"pending_days": 7})
    assert scheduled.status_code == 200, scheduled.content
    with tenant_context(world.tenants["acme"]):
        keychain_services.key_destroy(key_id=key_id, now=timezone.now() + timedelta(days=8))
    deleted = acme.admin.call("DELETE", url)
    assert deleted.status_code == 204, deleted.content
    assert_problem(acme.admin.get(url), 404, "key_manager_not_found")
    assert acme.state(key_id)["state"] == "DESTROYED"

    assert _owners(token) == []
    linked = globex.link(_new_key(token))
    assert linked.status_code == 201, linked.content
    assert _owners(token) == [str(world.tenants["globex"].uid)]
