"""L1 versions and their keystores: the one place that picks the keystore holding an L1
version's key and turns keystore failures into the key chain's errors (and, for a customer's
key manager, into the L1's state).

An L1 version lives in the platform keystore (HSM and BYOK: its `handle`) or in a customer's key
manager (HYOK: its `external_manager` and `external_key_id`). Key-manager credentials a customer
gives (a KMIP client key, a PIN) are sealed with AES-256-GCM under the platform's credentials
key (created at deploy, see `apps.keystores.platform`), with associated data naming the tenant
and the manager: a sealed blob copied to another tenant or manager does not open.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TypeVar
from uuid import UUID

from django.utils import timezone

from apps.core.errors import KcmError
from apps.keychain import crypto
from apps.keychain.errors import (
    ExternalKeyForbidden,
    ExternalKeyUnavailable,
    HsmUnavailable,
    KeyDestroyed,
    KeyMaterialExpired,
    KeyPendingImport,
    KeyVersionPendingDeletion,
)
from apps.keychain.models import CustomerKeyVersion, ExternalKeyManager, KeyState, VersionState
from apps.keychain.revocation import external_key_missing, external_state_apply
from apps.keystores.base import (
    Keystore,
    KeystoreConfigError,
    KeystoreError,
    KeystoreRefused,
    KeystoreUnavailable,
    RootKeyDestroyed,
    RootKeyIntegrityError,
    RootKeyNotFound,
)
from apps.keystores.platform import HYOK_CREDENTIALS, platform_key
from apps.keystores.registry import Connection, external_connection, external_keystore
from apps.keystores.registry import platform_keystore as platform_keystore
from apps.tenants.access import current_tenant

log = logging.getLogger(__name__)

T = TypeVar("T")

# --- credentials of customer key managers ------------------------------------------------


def _credentials_aad(tenant_uid: UUID, manager_id: UUID) -> bytes:
    return f"kcm:hyok-credentials:v1|tenant={tenant_uid}|manager={manager_id}".encode()


def credentials_seal(*, tenant_uid: UUID, manager_id: UUID, credentials: dict[str, str]) -> bytes:
    plaintext = json.dumps(credentials, sort_keys=True).encode()
    try:
        return platform_keystore().encrypt(
            platform_key(HYOK_CREDENTIALS).handle,
            plaintext,
            _credentials_aad(tenant_uid, manager_id),
        )
    except KeystoreError as exc:
        raise HsmUnavailable(f"The HSM cannot seal the credentials ({exc.code}).") from None


def credentials_open(*, tenant_uid: UUID, manager_id: UUID, sealed: bytes) -> dict[str, str]:
    """The credentials, in memory. Our HSM failing is not the customer's key manager failing:
    that is `HsmUnavailable` (503), and changes no key's state."""
    try:
        plaintext = platform_keystore().decrypt(
            platform_key(HYOK_CREDENTIALS).handle,
            sealed,
            _credentials_aad(tenant_uid, manager_id),
        )
    except RootKeyIntegrityError:
        raise KeystoreConfigError("the stored credentials do not belong to this manager") from None
    except KeystoreError as exc:
        raise HsmUnavailable(
            f"The HSM cannot open the key manager's credentials ({exc.code})."
        ) from None
    opened: dict[str, str] = json.loads(plaintext)
    return opened


def connection_for(manager: ExternalKeyManager, *, tenant_uid: UUID) -> Connection:
    """This process's keystore and circuit breaker for `manager`; rebuilt when the manager's
    settings or credentials change. A forked child starts without any."""

    def build() -> Keystore:
        credentials = credentials_open(
            tenant_uid=tenant_uid, manager_id=manager.pk, sealed=bytes(manager.credentials)
        )
        return external_keystore(manager.kind, manager.settings, credentials, owner=str(tenant_uid))

    return external_connection(manager.pk, stamp=manager.updated_at.isoformat(), build=build)


def manager_connection(manager: ExternalKeyManager) -> Connection:
    """`connection_for` the current tenant, failing as the API does when it cannot be built."""
    try:
        return connection_for(manager, tenant_uid=current_tenant().uid)
    except KeystoreConfigError as exc:
        raise ExternalKeyUnavailable(f"The key manager cannot be used: {exc}.") from None


# --- wrapping and unwrapping with an L1 version ------------------------------------------


def root_encrypt(version: CustomerKeyVersion, plaintext: bytes, aad: bytes) -> bytes:
    """Wrap under the L1 version, in whichever keystore holds it."""
    return _call(version, lambda ks, ref: ks.encrypt(ref, plaintext, aad))


def root_decrypt(version: CustomerKeyVersion, blob: bytes, aad: bytes) -> bytes:
    """Unwrap with the L1 version, in whichever keystore holds it."""
    return _call(version, lambda ks, ref: ks.decrypt(ref, blob, aad))


def _call(version: CustomerKeyVersion, use: Callable[[Keystore, str], T]) -> T:
    # A version scheduled for deletion (apps.keychain.version_deletion) is refused for its
    # waiting period, and one destroyed for good, whichever keystore holds it.
    if version.state == VersionState.PENDING_DELETION:
        raise KeyVersionPendingDeletion(
            f"Version {version.version} of the customer key is scheduled for deletion on "
            f"{version.deletion_date:%Y-%m-%d %H:%M} UTC; cancel the deletion to use it.",
            level="L1",
        )
    if version.state == VersionState.DESTROYED:
        raise KeyDestroyed(
            f"Version {version.version} of the customer key was destroyed.", level="L1"
        )
    if version.external_manager_id is None:
        # BYOK: the version's imported material may have expired (before the sweep removed it).
        expires = version.material_expires_at
        if expires is not None and expires <= timezone.now():
            raise KeyMaterialExpired(
                f"Version {version.version} of the customer key's imported material expired "
                f"on {expires:%Y-%m-%d %H:%M:%S} UTC.",
                level="L1",
            )
        if not version.handle:
            raise KeyPendingImport(
                f"Version {version.version} of the customer key has no imported material.",
                level="L1",
            )
        try:
            return use(platform_keystore(), version.handle)
        except KeystoreError as exc:
            raise platform_error(exc) from None
    manager = version.external_manager
    assert manager is not None
    connection = manager_connection(manager)
    try:
        return connection.breaker.call(lambda: use(connection.keystore, version.external_key_id))
    except KeystoreError as exc:
        raise _external_error(exc, version, connection) from None


def platform_error(exc: KeystoreError) -> KcmError:
    """The key chain's error for a failure of the platform keystore."""
    if isinstance(exc, RootKeyNotFound):
        return KeyDestroyed("The customer key's material is gone from the HSM.", level="L1")
    if isinstance(exc, RootKeyIntegrityError):
        return crypto.CiphertextInvalid(
            "A wrapped tenant key failed to unwrap: it does not belong here or was altered."
        )
    if isinstance(exc, KeystoreUnavailable):
        return HsmUnavailable(str(exc))
    return HsmUnavailable(f"HSM error ({exc.code}).")


def _external_error(
    exc: KeystoreError, version: CustomerKeyVersion, connection: Connection
) -> KcmError:
    """A refusal or a destroyed key changes the L1's state at once; so does unreachability once
    the breaker has opened. A key that is only not found makes it UNAVAILABLE until a sync
    confirms it."""
    if isinstance(exc, RootKeyIntegrityError):
        return crypto.CiphertextInvalid(
            "A wrapped tenant key failed to unwrap in the key manager: it does not belong here "
            "or was altered."
        )
    if isinstance(exc, KeystoreRefused):
        external_state_apply(version.key_id, KeyState.FORBIDDEN, f"The key manager refused: {exc}")
        return ExternalKeyForbidden(f"The customer's key manager refused: {exc}.")
    if isinstance(exc, RootKeyDestroyed):
        external_state_apply(version.key_id, KeyState.DESTROYED, f"The key manager says: {exc}")
        return KeyDestroyed(
            f"The customer's key is gone from their key manager: {exc}.", level="L1"
        )
    if isinstance(exc, RootKeyNotFound):
        # Not final on one answer: a later sync confirms it (see `external_key_missing`).
        external_key_missing(version.key_id, f"The key manager says: {exc}", confirming=False)
        return ExternalKeyUnavailable(
            f"The customer's key manager says it has no such key: {exc}. "
            "Until a later sync confirms it, the key is unavailable, not destroyed."
        )
    if isinstance(exc, KeystoreUnavailable):
        if connection.breaker.is_open:
            external_state_apply(
                version.key_id, KeyState.UNAVAILABLE, f"The key manager cannot be reached: {exc}"
            )
        return ExternalKeyUnavailable(f"The customer's key manager cannot be reached: {exc}.")
    return ExternalKeyUnavailable(f"The customer's key manager failed: {exc}.")


def root_destroy(version: CustomerKeyVersion) -> bool:
    """Destroy the version's key if the platform keystore holds it; whether it was there.

    Idempotent: a key already gone (an earlier attempt that failed to commit) is not an
    error. A customer's key manager's keys are theirs to remove: never touched.
    """
    if version.external_manager_id is not None or not version.handle:
        return False
    try:
        platform_keystore().destroy(version.handle)
    except RootKeyNotFound:
        return False
    return True
