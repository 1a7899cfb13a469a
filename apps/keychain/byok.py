"""BYOK: customer key material imported into the HSM under an RSA wrapping key.

Flow (as AWS KMS, Azure and Google Cloud do it): create the L1 (`PENDING_IMPORT`) → ask for
import parameters (a wrapping key pair generated in the HSM, its public key, a token valid
KCM_BYOK_IMPORT_TOKEN_HOURS) → the customer wraps their AES-256 key with the public key →
import: the HSM unwraps it into a non-extractable key; KCM returns the key check value.

The material is identified by a fingerprint the HSM computes (see keystores.base.KeyCheck):
re-importing the same material after it was deleted or expired restores the version it
belonged to, so every ciphertext made under it decrypts again; other material is refused,
except as a new version (BYOK rotation).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.audit.services import audit_record
from apps.core.errors import ValidationFailed
from apps.keychain.chain import tenant
from apps.keychain.errors import (
    ImportAlgorithmUnsupported,
    ImportMaterialMismatch,
    ImportMaterialNotNew,
    ImportTokenExpired,
    ImportTokenInvalid,
    InvalidKeyState,
    KeyNotFound,
    import_rejected,
)
from apps.keychain.models import (
    CustomerKey,
    CustomerKeyVersion,
    ImportToken,
    KeyState,
    Origin,
    TenantKey,
    VersionState,
)
from apps.keychain.revocation import broadcast_revocation
from apps.keychain.roots import platform_error, root_destroy
from apps.keychain.services import customer_key_name, l2_version_wrap, next_version
from apps.keystores.base import (
    WRAPPING_ALGORITHMS,
    WRAPPING_KEY_BITS,
    CapabilityNotSupported,
    ImportRejected,
    Keystore,
    KeystoreError,
    RootKeyNotFound,
    import_capability,
)
from apps.keystores.registry import platform_keystore

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "kcmimp"
AWAITING_MATERIAL = "Awaiting key material: request import parameters, then import."
# The states in which a BYOK key's material may be imported or deleted.
_MANAGEABLE = {KeyState.ENABLED, KeyState.DISABLED, KeyState.PENDING_IMPORT}


def supported_algorithms() -> list[str]:
    keystore = platform_keystore()
    return [a for a in WRAPPING_ALGORITHMS if keystore.supports(import_capability(a))]


def customer_key_create_byok(*, name: str, description: str = "") -> CustomerKey:
    """An L1 waiting for the customer's material, with its L2 to be wrapped at the import."""
    name = customer_key_name(name)
    with transaction.atomic():
        l1 = CustomerKey.objects.create(
            name=name,
            description=description,
            origin=Origin.BYOK,
            state=KeyState.PENDING_IMPORT,
            state_reason=AWAITING_MATERIAL,
        )
        l2 = TenantKey.objects.create(
            customer_key=l1, state=KeyState.PENDING_IMPORT, state_reason=AWAITING_MATERIAL
        )
        audit_record(
            action="key.create",
            target=str(l1.pk),
            details={"level": "L1", "name": name, "origin": Origin.BYOK, "tenant_key": str(l2.pk)},
        )
    return l1


def _byok_key(key_id: UUID | str, *, lock: bool = False) -> CustomerKey:
    query = CustomerKey.objects.select_for_update() if lock else CustomerKey.objects
    l1 = query.filter(pk=key_id).first()
    if l1 is None:
        raise KeyNotFound("No such customer key.")
    if l1.origin != Origin.BYOK:
        raise InvalidKeyState(
            f"Key material can only be imported into BYOK keys; this is {l1.origin}."
        )
    return l1


def import_parameters_create(
    *, key_id: UUID | str, algorithm: str, wrapping_key_bits: int = 4096
) -> ImportToken:
    """A fresh RSA wrapping key pair in the HSM and the token that names it."""
    l1 = _byok_key(key_id)
    if l1.state not in _MANAGEABLE:
        raise InvalidKeyState(f"The key is {l1.state}; it takes no key material.")
    supported = supported_algorithms()
    if algorithm not in supported:
        raise ImportAlgorithmUnsupported(
            f"{algorithm!r} is not supported by this HSM; use one of: {', '.join(supported)}.",
            supported=supported,
        )
    if wrapping_key_bits not in WRAPPING_KEY_BITS:
        raise ValidationFailed(
            f"wrapping_key_bits must be one of {', '.join(map(str, WRAPPING_KEY_BITS))}.",
            code="invalid_wrapping_key_bits",
        )
    keystore = platform_keystore()
    try:
        handle, public_der = keystore.create_wrapping_key(
            label=f"kcm/{tenant().slug}/{l1.name}/wrapping", bits=wrapping_key_bits
        )
    except KeystoreError as exc:
        raise platform_error(exc) from None
    now = timezone.now()
    try:
        with transaction.atomic():
            token = ImportToken.objects.create(
                key=l1,
                algorithm=algorithm,
                wrapping_key_bits=wrapping_key_bits,
                wrapping_handle=handle,
                public_key_der=public_der,
                created_at=now,
                expires_at=now + timedelta(hours=settings.KCM_BYOK_IMPORT_TOKEN_HOURS),
            )
            audit_record(
                action="key.import_parameters",
                target=str(l1.pk),
                details={"algorithm": algorithm, "bits": wrapping_key_bits, "token": str(token.pk)},
            )
    except BaseException:
        with contextlib.suppress(KeystoreError):
            keystore.destroy_wrapping_key(handle)
        raise
    return token


def import_token_value(token: ImportToken) -> str:
    """The token as the customer carries it: names the row, and a MAC under the server's
    secret binds it to this tenant and key (so it is re-derivable for a second download)."""
    return f"{TOKEN_PREFIX}_{token.pk.hex}_{_token_mac(token.pk, token.key_id)}"


def _token_mac(token_id: UUID, key_id: UUID) -> str:
    message = f"kcm-import-token:v1|{tenant().uid}|{token_id}|{key_id}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()[:32]


def _token_for(l1: CustomerKey, value: str, now: datetime) -> ImportToken:
    prefix, _, rest = value.partition("_")
    token_hex, _, mac = rest.partition("_")
    try:
        token_id = UUID(hex=token_hex)
    except ValueError:
        raise ImportTokenInvalid() from None
    token = ImportToken.objects.select_for_update().filter(pk=token_id, key=l1).first()
    if (
        prefix != TOKEN_PREFIX
        or token is None
        or not hmac.compare_digest(mac, _token_mac(token.pk, l1.pk))
        or token.used_at is not None
        or not token.wrapping_handle
    ):
        raise ImportTokenInvalid()
    if token.expires_at <= now:
        raise ImportTokenExpired(
            f"The import token expired at {token.expires_at:%Y-%m-%d %H:%M} UTC."
        )
    return token


def material_import(
    *,
    key_id: UUID | str,
    import_token: str,
    wrapped: bytes,
    material_expires_at: datetime | None = None,
    new_version: bool = False,
) -> CustomerKeyVersion:
    """Import wrapped material: the first material of the key, the same material again (it
    was deleted or expired, or to change its expiry), or with `new_version` new material as
    the key's next primary version. Anything refused leaves nothing changed."""
    now = timezone.now()
    if material_expires_at is not None and material_expires_at <= now + timedelta(minutes=1):
        raise ValidationFailed(
            "material_expires_at must be at least a minute in the future.",
            code="invalid_material_expiry",
        )
    keystore = platform_keystore()
    with transaction.atomic():
        l1 = _byok_key(key_id, lock=True)
        if l1.state not in _MANAGEABLE:
            raise InvalidKeyState(f"The key is {l1.state}; it takes no key material.")
        token = _token_for(l1, import_token, now)
        handle = _unwrap(keystore, l1, token, wrapped)
        keep_new_object = False  # False when the material was present already: a duplicate
        try:
            check = keystore.key_check(handle)
            versions = list(l1.versions.order_by("version"))
            same = next((v for v in versions if v.material_fingerprint == check.fingerprint), None)
            if new_version or not versions:
                if same is not None:
                    raise ImportMaterialNotNew(
                        f"This material is version {same.version} of the key already."
                    )
                if new_version and l1.state != KeyState.ENABLED:
                    raise InvalidKeyState("Only an ENABLED key gets a new version.")
                version = CustomerKeyVersion.objects.create(
                    key=l1,
                    version=next_version(l1),
                    handle=handle,
                    key_check_value=check.kcv,
                    key_check_value_cmac=check.kcv_cmac,
                    material_fingerprint=check.fingerprint,
                    material_expires_at=material_expires_at,
                )
                keep_new_object = True
                if not versions:
                    _wrap_first_l2(l1, version)
                l1.primary_version = version.version
            else:
                if same is None:
                    raise ImportMaterialMismatch(
                        "This material is not the key's: a key's material can only be imported "
                        "again as it was. Import other material as a new version instead."
                    )
                version = same
                if version.state == VersionState.DESTROYED:
                    # Its scheduled deletion came due: nothing may bring it back (and no sweep
                    # would ever destroy an object restored under a destroyed version).
                    raise InvalidKeyState(
                        f"Version {version.version} of the key was destroyed; its material "
                        "cannot be imported again."
                    )
                if not version.handle:  # deleted or expired: restore it with the new object
                    version.handle = handle
                    keep_new_object = True
                version.material_expires_at = material_expires_at
                version.save(update_fields=["handle", "material_expires_at"])
            if version.version == l1.primary_version and l1.state == KeyState.PENDING_IMPORT:
                l1.state, l1.state_reason = KeyState.ENABLED, ""
            l1.save()
            token.used_at = now
            token.save(update_fields=["used_at"])
            broadcast_revocation()
            audit_record(
                action="key.import",
                target=str(l1.pk),
                target_version=version.version,
                details={
                    "algorithm": token.algorithm,
                    "key_check_value": check.kcv,
                    "key_check_value_cmac": check.kcv_cmac,
                    "material_expires_at": material_expires_at and material_expires_at.isoformat(),
                    "new_version": new_version,
                },
            )
        except BaseException:
            _discard(keystore, handle)
            raise
        if not keep_new_object:
            _discard(keystore, handle)
    return version


def _unwrap(keystore: Keystore, l1: CustomerKey, token: ImportToken, wrapped: bytes) -> str:
    try:
        return keystore.import_root_key(
            wrapping_handle=token.wrapping_handle,
            algorithm=token.algorithm,
            wrapped=wrapped,
            label=f"kcm/{tenant().slug}/{l1.name}/imported",
        )
    except ImportRejected as exc:
        raise import_rejected(exc.code, f"The key material was refused: {exc}.") from None
    except CapabilityNotSupported:
        raise ImportAlgorithmUnsupported(
            f"This HSM cannot import {token.algorithm}.", supported=supported_algorithms()
        ) from None
    except RootKeyNotFound:
        raise ImportTokenInvalid(
            "The token's wrapping key is gone; request new parameters."
        ) from None
    except KeystoreError as exc:
        raise platform_error(exc) from None


def _wrap_first_l2(l1: CustomerKey, version: CustomerKeyVersion) -> None:
    l2 = TenantKey.objects.select_for_update().get(customer_key=l1)
    l2_version_wrap(l2, 1, version)
    l2.state, l2.state_reason, l2.primary_version = KeyState.ENABLED, "", 1
    l2.save(update_fields=["state", "state_reason", "primary_version", "updated_at"])


def _discard(keystore: Keystore, handle: str) -> None:
    try:
        keystore.destroy(handle)
    except KeystoreError:
        logger.exception("could not remove an imported key object that is not kept")


def material_delete(*, key_id: UUID | str) -> CustomerKey:
    """Delete the imported material of every version from the HSM. The key waits for the same
    material again (PENDING_IMPORT); until then nothing under it can be used."""
    with transaction.atomic():
        l1 = _byok_key(key_id, lock=True)
        if l1.state not in _MANAGEABLE:
            raise InvalidKeyState(f"The key is {l1.state}; its material cannot be deleted.")
        for version in l1.versions.exclude(handle=""):
            root_destroy(version)
            version.handle = ""
            version.save(update_fields=["handle"])
        l1.state = KeyState.PENDING_IMPORT
        l1.state_reason = "Imported material deleted; import the same material to restore the key."
        l1.save()
        broadcast_revocation()
        audit_record(action="key.import_delete", target=str(l1.pk))
    return l1


def byok_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Delete imported material past its expiry (the key then waits for an import) and the
    wrapping keys of used or expired import tokens. Returns what it removed."""
    now = now or timezone.now()
    keystore = platform_keystore()
    expired = 0
    with transaction.atomic():
        for version in (
            CustomerKeyVersion.objects.select_for_update()
            .select_related("key")
            .filter(key__origin=Origin.BYOK, material_expires_at__lte=now)
            .exclude(handle="")
        ):
            root_destroy(version)
            version.handle = ""
            version.save(update_fields=["handle"])
            l1 = version.key
            if version.version == l1.primary_version and l1.state == KeyState.ENABLED:
                l1.state = KeyState.PENDING_IMPORT
                l1.state_reason = (
                    f"Imported material expired at {version.material_expires_at:%Y-%m-%d %H:%M} "
                    "UTC; import it again to restore the key."
                )
                l1.save(update_fields=["state", "state_reason", "updated_at"])
            audit_record(
                action="key.import_expire", target=str(l1.pk), target_version=version.version
            )
            expired += 1
        if expired:
            broadcast_revocation()
    removed = 0
    used_or_expired = Q(used_at__isnull=False) | Q(expires_at__lte=now)
    for token in ImportToken.objects.exclude(wrapping_handle="").filter(used_or_expired):
        with contextlib.suppress(RootKeyNotFound):
            keystore.destroy_wrapping_key(token.wrapping_handle)
        ImportToken.objects.filter(pk=token.pk).update(wrapping_handle="")
        removed += 1
    return {"expired_material": expired, "wrapping_keys_removed": removed}
