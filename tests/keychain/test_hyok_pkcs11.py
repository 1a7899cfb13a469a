"""HYOK over PKCS#11: a second SoftHSM2 token with its own PIN (created here) stands for the
customer's own HSM. The customer acts on it from another process, as they would."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django_tenants.utils import tenant_context

from apps.core.roles import Role
from apps.keychain import tasks as keychain_tasks
from apps.keychain.cache import key_cache
from apps.keystores.pkcs11 import session as pkcs11_session
from apps.keystores.pkcs11.keystore import Pkcs11Keystore
from apps.keystores.registry import forget_connections
from apps.tenants.models import Tenant
from tests.helpers import Api, assert_problem

CTX = {"order": "9"}
PAYMENTS = "/api/v1/service-keys/payments"


class CustomerToken:
    """A token of its own in the SoftHSM2 token folder, administered by its owner."""

    def __init__(self) -> None:
        self.label = f"customer-{secrets.token_hex(4)}"
        self.pin = secrets.token_hex(8)
        self.library = django_settings.KCM_PKCS11_LIBRARY
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", self.label,
             "--pin", self.pin, "--so-pin", secrets.token_hex(8)],
            check=True, capture_output=True,
        )  # fmt: skip
        self.folder = self._folder()
        self.aside = Path(tempfile.mkdtemp(prefix="kcm-unplugged-")) / self.folder.name

    def _folder(self) -> Path:
        config = Path(os.environ["SOFTHSM2_CONF"]).read_text()
        match = re.search(r"directories\.tokendir\s*=\s*(\S+)", config)
        assert match, "SOFTHSM2_CONF names no token folder"
        for candidate in Path(match.group(1)).iterdir():
            token_file = candidate / "token.object"
            if token_file.exists() and self.label.encode() in token_file.read_bytes():
                return candidate
        raise AssertionError(f"token {self.label} not found")

    def run(self, code: str) -> str:
        """Run python-pkcs11 code as the customer, in a process of their own (`s` is a
        logged-in read-write session; Attribute, KeyType, ObjectClass are imported)."""
        script = textwrap.dedent(
            f"""
            import pkcs11
            from pkcs11 import Attribute, KeyType, ObjectClass
            lib = pkcs11.lib({self.library!r})
            with lib.get_token(token_label={self.label!r}).open(rw=True, user_pin={self.pin!r}) as s:
            """
        ) + textwrap.indent(textwrap.dedent(code), "    ")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def create_key(self, label: str, bits: int = 256) -> str:
        self.run(
            f"""
            s.generate_key(KeyType.AES, {bits}, label={label!r}, id={label.encode()!r}, store=True,
                template={{Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                           Attribute.MODIFIABLE: True}})
            """
        )
        return label

    def revoke(self, label: str) -> None:
        self.run(
            f"""
            key = s.get_key(label={label!r}, object_class=ObjectClass.SECRET_KEY)
            key[Attribute.ENCRYPT] = False
            key[Attribute.DECRYPT] = False
            """
        )

    def destroy(self, label: str) -> None:
        self.run(f"s.get_key(label={label!r}, object_class=ObjectClass.SECRET_KEY).destroy()")

    def unplug(self) -> None:
        """The customer's HSM goes away: its storage leaves the token folder (SoftHSM2 would
        find it anywhere inside)."""
        self.folder.rename(self.aside)

    def plug_in(self) -> None:
        self.aside.rename(self.folder)

    def delete(self) -> None:
        subprocess.run(
            ["softhsm2-util", "--delete-token", "--token", self.label], capture_output=True
        )
        shutil.rmtree(self.aside.parent, ignore_errors=True)
        # This process still has a slot for it, which fails until the library is initialised
        # again (KCM's own lookups skip it; other code may not).
        Pkcs11Keystore.from_settings().session.run(lambda session: None, restart=True)


@pytest.fixture(scope="module")
def token() -> Iterator[CustomerToken]:
    created = CustomerToken()
    yield created
    created.delete()


@pytest.fixture
def customer(token: CustomerToken, settings: Any) -> Iterator[CustomerToken]:
    settings.KCM_HYOK_TIMEOUT_SECONDS = 1
    settings.KCM_HYOK_BREAKER_FAILURES = 2
    settings.KCM_HYOK_BREAKER_RESET_SECONDS = 30
    forget_connections()
    yield token
    if not token.folder.exists():
        token.plug_in()
    forget_connections()


class Hyok:
    def __init__(self, api: Any, token: CustomerToken) -> None:
        self.admin: Api = api("acme", Role.KEY_ADMIN)
        self.user: Api = api("acme", Role.KEY_USER)
        self.token = token

    def manager(self, pin: str | None = None) -> dict[str, Any]:
        made = self.admin.post(
            "/api/v1/key-managers/",
            {
                "name": f"customer hsm {secrets.token_hex(3)}",
                "kind": "pkcs11",
                "settings": {"library": self.token.library, "token_label": self.token.label},
                "credentials": {"pin": pin or self.token.pin},
            },
        )
        assert made.status_code == 201, made.content
        return dict(made.json_body)

    def link(self, external_key_id: str, manager_id: str | None = None) -> Any:
        return self.admin.post(
            "/api/v1/customer-keys/hyok/",
            {
                "name": "held",
                "key_manager_id": manager_id or self.manager()["id"],
                "external_key_id": external_key_id,
            },
        )

    def chain(self, external_key_id: str) -> dict[str, Any]:
        l1 = self.link(external_key_id)
        assert l1.status_code == 201, l1.content
        l3 = self.admin.post(
            "/api/v1/service-keys/", {"name": "payments", "customer_key_id": l1.json_body["id"]}
        )
        assert l3.status_code == 201, l3.content
        return dict(l1.json_body)

    def data_key(self) -> Any:
        return self.user.post(f"{PAYMENTS}/generate-data-key/", {"context": CTX})

    def decrypt(self, ciphertext: str) -> Any:
        return self.user.post(
            f"{PAYMENTS}/decrypt-data-key/", {"ciphertext": ciphertext, "context": CTX}
        )

    def state(self, key_id: str) -> dict[str, Any]:
        return dict(self.admin.get(f"/api/v1/keys/{key_id}/material/").json_body)

    def sync(self, key_id: str) -> dict[str, Any]:
        synced = self.admin.post(f"/api/v1/keys/{key_id}/sync/", {})
        assert synced.status_code == 200, synced.content
        return dict(synced.json_body)


@pytest.fixture
def hyok_api(api: Any, customer: CustomerToken) -> Hyok:
    return Hyok(api, customer)


def _key_label() -> str:
    return f"kcm-root-{secrets.token_hex(3)}"


@pytest.mark.parametrize("reference", ["label", "id"])
def test_a_key_in_the_customers_token_wraps_the_chain(
    hyok_api: Hyok, customer: CustomerToken, reference: str
) -> None:
    label = customer.create_key(_key_label())
    external = label if reference == "label" else "id:" + label.encode().hex()

    l1 = hyok_api.chain(external)

    assert (l1["origin"], l1["state"]) == ("HYOK", "ENABLED")
    made = hyok_api.data_key()
    assert made.status_code == 200, made.content
    key_cache().reset()
    back = hyok_api.decrypt(made.json_body["ciphertext"])
    assert back.status_code == 200 and back.json_body["plaintext"] == made.json_body["plaintext"]


def test_linking_refuses_unusable_keys(hyok_api: Hyok, customer: CustomerToken) -> None:
    assert_problem(hyok_api.link("no-such-key"), 400, "external_key_invalid")
    short = customer.create_key(_key_label(), bits=128)
    assert_problem(hyok_api.link(short), 400, "external_key_invalid")
    revoked = customer.create_key(_key_label())
    customer.revoke(revoked)
    assert_problem(hyok_api.link(revoked), 400, "external_key_invalid")


def test_revocation_in_the_token_refuses_within_the_ttl_and_at_once_after(
    hyok_api: Hyok, customer: CustomerToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    label = customer.create_key(_key_label())
    l1 = hyok_api.chain(label)
    made = hyok_api.data_key().json_body
    monkeypatch.setattr(key_cache(), "ttl", 1.0)

    customer.revoke(label)
    time.sleep(1.1)

    assert_problem(hyok_api.decrypt(made["ciphertext"]), 409, "external_key_forbidden")
    state = hyok_api.state(l1["id"])
    assert state["state"] == "FORBIDDEN" and "decrypt" in state["state_reason"]
    assert_problem(hyok_api.data_key(), 409, "external_key_forbidden")


def test_the_sync_sees_revocation_and_destruction(
    hyok_api: Hyok, customer: CustomerToken, settings: Any
) -> None:
    settings.KCM_HYOK_DESTROY_CONFIRM_SECONDS = 0
    revoked, destroyed = customer.create_key(_key_label()), customer.create_key(_key_label())
    first = hyok_api.chain(revoked)
    made = hyok_api.data_key().json_body
    second = hyok_api.admin.post(
        "/api/v1/customer-keys/hyok/",
        {"name": "other", "key_manager_id": hyok_api.manager()["id"], "external_key_id": destroyed},
    ).json_body

    customer.revoke(revoked)
    customer.destroy(destroyed)
    with tenant_context(Tenant.objects.get(slug="acme")):
        first_look = keychain_tasks.hyok_sync()
        states = keychain_tasks.hyok_sync()  # a second "no such key" confirms the destruction

    assert first_look == {"acme": {first["id"]: "FORBIDDEN", second["id"]: "UNAVAILABLE"}}
    assert states == {"acme": {first["id"]: "FORBIDDEN", second["id"]: "DESTROYED"}}
    assert "no such key" in hyok_api.state(second["id"])["state_reason"]
    assert_problem(hyok_api.decrypt(made["ciphertext"]), 409, "external_key_forbidden")


def test_an_unplugged_token_gives_quick_503s_and_the_key_recovers(
    hyok_api: Hyok, customer: CustomerToken
) -> None:
    label = customer.create_key(_key_label())
    l1 = hyok_api.chain(label)
    made = hyok_api.data_key().json_body

    customer.unplug()
    key_cache().reset()
    for _ in range(3):
        began = time.monotonic()
        assert_problem(hyok_api.decrypt(made["ciphertext"]), 503, "external_key_unavailable")
        assert time.monotonic() - began < 1.5
    assert hyok_api.state(l1["id"])["state"] == "UNAVAILABLE"
    assert hyok_api.sync(l1["id"])["state"] == "UNAVAILABLE"

    customer.plug_in()
    time.sleep(1.0)  # the connector re-initialises the library at most once a second
    assert hyok_api.sync(l1["id"])["state"] == "ENABLED"

    back = hyok_api.decrypt(made["ciphertext"])
    assert back.status_code == 200 and back.json_body["plaintext"] == made["plaintext"]


def test_an_unplugged_token_does_not_make_each_call_reinitialise_the_library(
    hyok_api: Hyok, customer: CustomerToken
) -> None:
    """Re-initialising the library drops every PKCS#11 session of the process, the platform's
    included, under the process-wide lock. A customer's token that is gone costs a call one
    re-initialisation at most (the keystore's own, at most once a second), not the login's
    retries for SoftHSM2's start-up race: those re-initialised four more times and slept 0.75 s
    holding the lock, so every other PKCS#11 call of the process waited."""
    label = customer.create_key(_key_label())
    hyok_api.chain(label)
    made = hyok_api.data_key().json_body
    customer.unplug()
    key_cache().reset()
    # The first call finds the open session empty and the token unanswering; the next one,
    # a second later, re-initialises the library to look for it again.
    assert_problem(hyok_api.decrypt(made["ciphertext"]), 503, "external_key_unavailable")
    time.sleep(1.0)
    before = pkcs11_session.library_generation()
    assert_problem(hyok_api.decrypt(made["ciphertext"]), 503, "external_key_unavailable")
    assert pkcs11_session.library_generation() - before == 1
    # The platform's token still serves, on the session reopened after that one time.
    assert Pkcs11Keystore.from_settings().session.run(lambda s: len(s.generate_random(128))) == 16


def test_the_connector_waits_for_the_process_wide_pkcs11_lock(
    hyok_api: Hyok, customer: CustomerToken
) -> None:
    """Every PKCS#11 call of the process, the customer's token's included, takes one lock: a
    call that cannot get it gives up after the timeout instead of racing SoftHSM2."""
    l1 = hyok_api.chain(customer.create_key(_key_label()))
    lock = pkcs11_session._process.lock
    assert lock.acquire(timeout=5)
    try:
        began = time.monotonic()
        synced = hyok_api.sync(l1["id"])
        waited = time.monotonic() - began
    finally:
        lock.release()
    assert synced["state"] == "UNAVAILABLE" and "lock" in synced["state_reason"]
    assert 0.9 < waited < 3.0
    assert hyok_api.sync(l1["id"])["state"] == "ENABLED"


def test_the_pin_is_sealed_and_a_library_must_be_allowed(
    hyok_api: Hyok, customer: CustomerToken, settings: Any
) -> None:
    manager = hyok_api.manager()
    shown = hyok_api.admin.get(f"/api/v1/key-managers/{manager['id']}/")
    assert customer.pin not in shown.content.decode()
    from apps.keychain.models import ExternalKeyManager

    with tenant_context(Tenant.objects.get(slug="acme")):
        stored = ExternalKeyManager.objects.get(pk=manager["id"])
        assert customer.pin.encode() not in bytes(stored.credentials)
    settings.KCM_HYOK_PKCS11_LIBRARIES = []
    refused = hyok_api.admin.post(
        "/api/v1/key-managers/",
        {
            "name": "elsewhere",
            "kind": "pkcs11",
            "settings": {"library": "/tmp/evil.so", "token_label": "x"},
            "credentials": {"pin": "1"},
        },
    )
    assert_problem(refused, 400, "key_manager_not_allowed")
