"""HYOK over PKCS#11: a tenant's key manager reaches only the tenant's own token, with its PIN.

The process logs in to a token once and further sessions inherit that login, so SoftHSM2 opens
them whatever PIN is given; and the development default allows the platform's own library. A
tenant key admin could then link the platform token's keys (the credentials root has a
predictable label) or another tenant's token as its HYOK root.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django_tenants.utils import tenant_context

from apps.core.roles import Role
from apps.keychain.models import CustomerKey
from apps.keystores.platform import HYOK_CREDENTIALS, platform_key
from apps.keystores.registry import forget_connections
from apps.tenants.models import Tenant
from tests.helpers import assert_problem
from tests.keychain.test_hyok_pkcs11 import CustomerToken, Hyok


@pytest.fixture(scope="module")
def token() -> Iterator[CustomerToken]:
    created = CustomerToken()
    yield created
    created.delete()


@pytest.fixture
def hyok(api: Any, token: CustomerToken, settings: Any) -> Iterator[Hyok]:
    settings.KCM_HYOK_TIMEOUT_SECONDS = 1
    forget_connections()
    yield Hyok(api, token)
    forget_connections()


def _manager(hyok: Hyok, *, library: str, token_label: str, pin: str) -> str:
    made = hyok.admin.post(
        "/api/v1/key-managers/",
        {
            "name": f"hsm {secrets.token_hex(3)}",
            "kind": "pkcs11",
            "settings": {"library": library, "token_label": token_label},
            "credentials": {"pin": pin},
        },
    )
    assert made.status_code == 201, made.content
    return str(made.json_body["id"])


def _link(hyok: Hyok, external_key_id: str, manager_id: str | None = None) -> Any:
    return hyok.admin.post(
        "/api/v1/customer-keys/hyok/",
        {
            "name": f"held {secrets.token_hex(3)}",
            "key_manager_id": manager_id or hyok.manager()["id"],
            "external_key_id": external_key_id,
        },
    )


def _hyok_keys(slug: str) -> int:
    with tenant_context(Tenant.objects.get(slug=slug)):
        return CustomerKey.objects.filter(origin="HYOK").count()


def test_it_refuses_a_wrong_pin_when_the_process_is_logged_in(
    hyok: Hyok, token: CustomerToken
) -> None:
    first = _link(hyok, token.create_key(f"k-{secrets.token_hex(3)}"))
    assert first.status_code == 201, first.content  # the process is now logged in

    wrong = _manager(hyok, library=token.library, token_label=token.label, pin="00000000")
    refused = _link(hyok, token.create_key(f"k-{secrets.token_hex(3)}"), manager_id=wrong)

    assert_problem(refused, 400, "external_key_invalid")
    assert "PIN" in refused.json_body["detail"]
    assert token.pin not in refused.content.decode()
    # The right PIN still works after the refusal.
    again = _link(hyok, token.create_key(f"k-{secrets.token_hex(3)}"))
    assert again.status_code == 201, again.content


def test_it_refuses_the_platforms_own_token(hyok: Hyok) -> None:
    before = _hyok_keys("acme")
    platform = _manager(
        hyok,
        library=django_settings.KCM_PKCS11_LIBRARY,
        token_label=django_settings.KCM_PKCS11_TOKEN_LABEL,
        pin=django_settings.KCM_PKCS11_PIN or "",
    )

    # By CKA_ID here: this test token holds several test runs' roots under the same label.
    credentials_root = "id:" + platform_key(HYOK_CREDENTIALS).handle
    refused = _link(hyok, credentials_root, manager_id=platform)

    assert_problem(refused, 400, "external_key_invalid")
    assert "platform" in refused.json_body["detail"]
    assert _hyok_keys("acme") == before


def test_a_second_tenant_cannot_use_the_first_tenants_token(
    api: Any, hyok: Hyok, token: CustomerToken
) -> None:
    acme_key = token.create_key(f"acme-{secrets.token_hex(3)}")
    assert _link(hyok, acme_key).status_code == 201
    globex = Hyok(api, token)
    globex.admin = api("globex", Role.KEY_ADMIN)
    before = _hyok_keys("globex")

    globex_key = token.create_key(f"globex-{secrets.token_hex(3)}")
    for external in (acme_key, globex_key):
        refused = _link(globex, external)
        assert_problem(refused, 400, "external_key_invalid")
        assert "another tenant" in refused.json_body["detail"]
        # Nothing about the owner or the token's other keys.
        assert acme_key not in refused.json_body["detail"].replace(external, "")
        assert str(Tenant.objects.get(slug="acme").uid) not in refused.content.decode()
    assert _hyok_keys("globex") == before
