"""HYOK: customer keys (L1) that stay in the customer's own key manager.

KCM holds a reference (manager + external key id) and asks the manager to wrap and unwrap the
L2. The manager's answers drive the L1's state: unreachable → UNAVAILABLE, refused →
FORBIDDEN, destroyed → DESTROYED (with the reason in `state_reason`); "no such key" is
UNAVAILABLE until a sync at least KCM_HYOK_DESTROY_CONFIRM_SECONDS later confirms it. The
periodic sync (beat) and the on-demand sync ask the manager; a failed unwrap in a request acts
at once (a refusal or a destroyed key is applied immediately, a missing key starts the wait
for confirmation, unreachability counts once the circuit breaker opens). Every state
change is broadcast, so every process drops the tenant's cached keys.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any, TypeVar
from uuid import UUID

from django.db import transaction

from apps.audit.services import audit_record
from apps.core.errors import Conflict, ValidationFailed
from apps.keychain.chain import ensure_usable, tenant
from apps.keychain.errors import (
    ExternalKeyInvalid,
    ExternalKeyUnavailable,
    InvalidKeyState,
    KeyManagerInUse,
    KeyManagerNotFound,
    KeyNotFound,
)
from apps.keychain.hyok_config import public_settings, validated
from apps.keychain.models import (
    HYOK_HANDLE_PREFIX,
    CustomerKey,
    CustomerKeyVersion,
    ExternalKeyManager,
    KeyState,
    Origin,
    VersionState,
)
from apps.keychain.revocation import SYNCED_STATES, external_key_missing, external_state_apply
from apps.keychain.roots import connection_for, credentials_seal, manager_connection
from apps.keychain.services import (
    customer_key_insert,
    customer_key_name,
    next_version,
    primary_version_promote,
)
from apps.keystores.base import (
    KeyInfo,
    KeystoreConfigError,
    KeystoreError,
    KeystoreRefused,
    KeystoreUnavailable,
    RootKeyDestroyed,
    RootKeyIntegrityError,
    RootKeyNotFound,
)
from apps.keystores.claims import token_claims_release, token_identity
from apps.keystores.registry import external_keystore

logger = logging.getLogger(__name__)

T = TypeVar("T")


def hyok_handle(manager_id: UUID, external_key_id: str) -> str:
    return f"{HYOK_HANDLE_PREFIX}{manager_id}/{external_key_id}"


# --- key managers -----------------------------------------------------------------------


def key_manager_create(
    *, name: str, kind: str, config: dict[str, Any], credentials: dict[str, Any]
) -> ExternalKeyManager:
    """Register a customer's key manager; the credentials are sealed under the platform root."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationFailed("A key manager name is 1-100 characters.", code="invalid_name")
    if ExternalKeyManager.objects.filter(name=name).exists():
        raise Conflict(f"A key manager named {name!r} exists already.", code="key_manager_exists")
    clean_config, clean_credentials = validated(kind, config, credentials)
    try:
        external_keystore(kind, clean_config, clean_credentials, owner=str(tenant().uid)).close()
    except KeystoreConfigError as exc:
        raise ValidationFailed(
            f"The key manager settings do not work: {exc}", code="key_manager_invalid"
        ) from None
    manager_id = uuid.uuid4()
    with transaction.atomic():
        manager = ExternalKeyManager.objects.create(
            id=manager_id,
            name=name,
            kind=kind,
            settings=clean_config,
            credentials=credentials_seal(
                tenant_uid=tenant().uid, manager_id=manager_id, credentials=clean_credentials
            ),
        )
        audit_record(
            action="key_manager.create",
            target=str(manager.pk),
            details={"name": name, "kind": kind, **public_settings(kind, clean_config)},
        )
    return manager


def key_manager_delete(*, manager_id: UUID | str) -> None:
    """Remove a key manager no customer key uses any more (every version it holds is destroyed,
    or belongs to a destroyed key: those keep their reference, not the manager). A PKCS#11
    token this tenant registered is released when no other of its key managers loads the same
    library (a serial is only known by asking the token), so another tenant may link it."""
    with transaction.atomic():
        manager = ExternalKeyManager.objects.select_for_update().filter(pk=manager_id).first()
        if manager is None:
            raise KeyManagerNotFound()
        versions = CustomerKeyVersion.objects.filter(external_manager=manager)
        in_use = sorted(
            versions.exclude(state=VersionState.DESTROYED)
            .exclude(key__state=KeyState.DESTROYED)
            .values_list("key__name", flat=True)
            .distinct()
        )
        if in_use:
            raise KeyManagerInUse(
                f"Customer keys still use this key manager: {', '.join(in_use)}. Delete them "
                "(or their versions held there) first."
            )
        versions.update(external_manager=None, state=VersionState.DESTROYED)
        released = 0
        if manager.kind == ExternalKeyManager.Kind.PKCS11:
            library = token_identity(manager.settings.get("library", ""))
            others = ExternalKeyManager.objects.filter(kind=manager.kind).exclude(pk=manager.pk)
            if not any(token_identity(m.settings.get("library", "")) == library for m in others):
                released = token_claims_release(owner=str(tenant().uid), library=library)
        manager.delete()
        audit_record(
            action="key_manager.delete",
            target=str(manager_id),
            details={
                "name": manager.name,
                "kind": manager.kind,
                **public_settings(manager.kind, manager.settings),
                "tokens_released": released,
            },
        )


def _manager(manager_id: UUID | str) -> ExternalKeyManager:
    manager = ExternalKeyManager.objects.filter(pk=manager_id).first()
    if manager is None:
        raise KeyManagerNotFound()
    return manager


# --- linking (create, rotate) -------------------------------------------------------------


def customer_key_create_hyok(
    *, name: str, manager_id: UUID | str, external_key_id: str, description: str = ""
) -> CustomerKey:
    """An L1 that is a key in the customer's key manager, checked first (see `_check_link`),
    and its L2, wrapped by that key."""
    name = customer_key_name(name)
    manager = _manager(manager_id)
    external_key_id = _check_link(manager, external_key_id)
    return customer_key_insert(
        name=name,
        description=description,
        origin=Origin.HYOK,
        version={
            "handle": hyok_handle(manager.pk, external_key_id),
            "external_manager": manager,
            "external_key_id": external_key_id,
        },
        details={"key_manager": str(manager.pk), "external_key_id": external_key_id},
    )


def customer_key_link_version(
    *, key_id: UUID | str, external_key_id: str, manager_id: UUID | str | None = None
) -> CustomerKey:
    """HYOK rotation: another external key becomes the L1's next primary version. The L2
    versions stay wrapped by the old one until a rewrap moves them."""
    with transaction.atomic():
        l1 = CustomerKey.objects.select_for_update().filter(pk=key_id).first()
        if l1 is None:
            raise KeyNotFound("No such customer key.")
        if l1.origin != Origin.HYOK:
            raise InvalidKeyState("Only HYOK keys are linked to external keys.")
        ensure_usable(l1, f"customer key {l1.name!r}")
        primary = l1.versions.get(version=l1.primary_version)
        manager = _manager(manager_id or primary.external_manager_id)  # type: ignore[arg-type]
        external_key_id = _check_link(manager, external_key_id)
        version = next_version(l1)
        CustomerKeyVersion.objects.create(
            key=l1,
            version=version,
            handle=hyok_handle(manager.pk, external_key_id),
            external_manager=manager,
            external_key_id=external_key_id,
        )
        primary_version_promote(
            l1,
            version,
            details={"key_manager": str(manager.pk), "external_key_id": external_key_id},
        )
    return l1


def _check_link(manager: ExternalKeyManager, external_key_id: str) -> str:
    """The external key exists, is AES-256, is usable, and a probe round-trips; and the
    manager honours associated data (a blob opened with other AAD must fail)."""
    external_key_id = (external_key_id or "").strip()
    if not external_key_id or len(external_key_id) > 150:
        raise ValidationFailed(
            "external_key_id is 1-150 characters.", code="invalid_external_key_id"
        )
    if CustomerKeyVersion.objects.filter(handle=hyok_handle(manager.pk, external_key_id)).exists():
        raise Conflict(
            "This external key is linked to a customer key already.", code="external_key_linked"
        )
    connection = manager_connection(manager)
    keystore = connection.keystore

    def invalid(reason: str) -> ExternalKeyInvalid:
        return ExternalKeyInvalid(f"External key {external_key_id!r}: {reason}.")

    try:
        info: KeyInfo = connection.breaker.call(lambda: keystore.describe(external_key_id))
        if info.algorithm != "AES" or info.bits != 256:
            raise invalid(f"it is {info.algorithm}-{info.bits}, not AES-256")
        if not info.usable:
            raise invalid(f"it is not usable ({info.detail})")
        probe, aad = os.urandom(32), f"kcm:hyok-link-probe:v1|tenant={tenant().uid}".encode()
        blob = keystore.encrypt(external_key_id, probe, aad)
        if keystore.decrypt(external_key_id, blob, aad) != probe:
            raise invalid("a probe did not decrypt to what was encrypted")
        try:
            keystore.decrypt(external_key_id, blob, aad + b"|other")
        except RootKeyIntegrityError:
            pass
        else:
            raise invalid("the key manager ignores associated data")
    except RootKeyNotFound:
        raise invalid("the key manager has no such key") from None
    except KeystoreRefused as exc:
        raise invalid(f"the key manager refuses ({exc})") from None
    except RootKeyIntegrityError as exc:
        raise invalid(f"the probe failed ({exc})") from None
    except KeystoreUnavailable as exc:
        raise ExternalKeyUnavailable(f"The key manager cannot be reached: {exc}.") from None
    except KeystoreError as exc:
        raise invalid(str(exc)) from None
    return external_key_id


# --- state sync ---------------------------------------------------------------------------


def hyok_key_sync(*, key_id: UUID | str) -> CustomerKey:
    """Ask the key manager about the L1's primary external key now and apply the answer."""
    l1 = CustomerKey.objects.filter(pk=key_id).first()
    if l1 is None:
        raise KeyNotFound("No such customer key.")
    if l1.origin != Origin.HYOK:
        raise InvalidKeyState("Only HYOK keys are synchronised with a key manager.")
    if l1.state in SYNCED_STATES:
        state, reason = _observe(
            l1.versions.select_related("external_manager").get(version=l1.primary_version)
        )
        if state == _MISSING:
            external_key_missing(l1.pk, reason, confirming=True)
        else:
            external_state_apply(l1.pk, state, reason)
        l1.refresh_from_db()
    return l1


def hyok_sync_all() -> dict[str, str]:
    """Sync every HYOK key of this tenant that the sync may change; {key id: state}."""
    result = {}
    for l1 in CustomerKey.objects.filter(origin=Origin.HYOK, state__in=SYNCED_STATES):
        try:
            result[str(l1.pk)] = hyok_key_sync(key_id=l1.pk).state
        except Exception:
            logger.exception("HYOK sync of key %s failed; the next sync retries", l1.pk)
    return result


# What `_observe` returns for "no such key": not a state until a later sync confirms it.
_MISSING = "MISSING"


def _observe(version: CustomerKeyVersion) -> tuple[str, str]:
    """The state the key manager's answer means (or `_MISSING`), and why. The sync bypasses
    the breaker (it is how an open breaker learns that the manager is back) and resets it on
    an answer."""
    manager = version.external_manager
    assert manager is not None
    try:
        connection = connection_for(manager, tenant_uid=tenant().uid)
    except KeystoreConfigError as exc:
        return KeyState.UNAVAILABLE, f"The key manager cannot be used: {exc}"
    try:
        info = connection.keystore.describe(version.external_key_id)
    except KeystoreUnavailable as exc:
        return KeyState.UNAVAILABLE, f"The key manager cannot be reached: {exc}"
    except RootKeyDestroyed as exc:
        connection.breaker.reset()
        return KeyState.DESTROYED, f"The key manager says: {exc}"
    except RootKeyNotFound as exc:
        connection.breaker.reset()
        return _MISSING, f"The key manager says: {exc}"
    except KeystoreError as exc:
        connection.breaker.reset()
        return KeyState.FORBIDDEN, f"The key manager refused: {exc}"
    connection.breaker.reset()
    if not info.usable:
        return KeyState.FORBIDDEN, f"The key manager reports the key unusable: {info.detail}"
    return KeyState.ENABLED, ""
