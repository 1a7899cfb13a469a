"""Unwrapping down the chain: L1 (its keystore) → L2 → L3, through the per-process cache.

The only place that turns stored ciphertexts into usable keys, and so the only place that
decides whether a chain is usable (every level above must be ENABLED).
"""

from __future__ import annotations

from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.utils import timezone

from apps.core.errors import KcmError
from apps.keychain import crypto, roots
from apps.keychain.cache import LoadedServiceKey, LoadedVersion, key_cache
from apps.keychain.errors import (
    ExternalKeyForbidden,
    ExternalKeyUnavailable,
    KeyDestroyed,
    KeyDisabled,
    KeyMaterialExpired,
    KeyNotFound,
    KeyPendingDeletion,
    KeyPendingImport,
    KeyUnavailable,
)
from apps.keychain.models import (
    CustomerKey,
    CustomerKeyVersion,
    KeyBase,
    KeyState,
    ServiceKey,
    ServiceKeyVersion,
    TenantKey,
    TenantKeyVersion,
    VersionState,
)
from apps.tenants.access import current_tenant
from apps.tenants.models import Tenant

# Errors of states only customer-controlled L1s (BYOK, HYOK) take.
_EXTERNAL_ERRORS: dict[str, type[KcmError]] = {
    KeyState.PENDING_IMPORT: KeyPendingImport,
    KeyState.UNAVAILABLE: ExternalKeyUnavailable,
    KeyState.FORBIDDEN: ExternalKeyForbidden,
}


def tenant() -> Tenant:
    return current_tenant()


def observe_epoch() -> tuple[str, int]:
    current = tenant()
    key_cache().observe_epoch(current.schema_name, current.key_epoch)
    return current.schema_name, current.key_epoch


def ensure_usable(key: KeyBase, what: str) -> None:
    """Raise the error that says why `key` cannot be used, if it cannot."""
    state = key.state
    if state == KeyState.ENABLED:
        return
    if state == KeyState.PENDING_IMPORT and isinstance(key, CustomerKey):
        # Waiting for material because it expired (the BYOK sweep removed it): say so.
        expires = key.material_expires_at
        if expires is not None and expires <= timezone.now():
            raise KeyMaterialExpired(
                f"The {what}'s imported material expired on {expires:%Y-%m-%d %H:%M:%S} UTC.",
                level="L1",
            )
    if state == KeyState.DISABLED:
        raise KeyDisabled(f"The {what} is disabled.", level=key.level)  # type: ignore[attr-defined]
    if state == KeyState.PENDING_DELETION:
        raise KeyPendingDeletion(
            f"The {what} is scheduled for deletion on {key.deletion_date:%Y-%m-%d %H:%M} UTC.",
            level=key.level,  # type: ignore[attr-defined]
        )
    if state == KeyState.DESTROYED:
        raise KeyDestroyed(f"The {what} was destroyed.", level=key.level)  # type: ignore[attr-defined]
    if state in _EXTERNAL_ERRORS:  # PENDING_IMPORT (BYOK), UNAVAILABLE and FORBIDDEN (HYOK)
        raise _EXTERNAL_ERRORS[state](
            f"The {what} is {state}: {key.state_reason or 'no reason recorded'}",
            level=key.level,  # type: ignore[attr-defined]
        )
    raise KeyUnavailable(f"The {what} is {state}.", level=key.level)  # type: ignore[attr-defined]


def l2_aad(l2v: TenantKeyVersion, key: TenantKey) -> bytes:
    return crypto.wrap_aad(
        "L2",
        tenant=tenant().uid,
        key=key.pk,
        version=l2v.version,
        parent=f"{key.customer_key_id}/{l2v.parent.version}",
    )


def l3_aad(l3v: ServiceKeyVersion, key: ServiceKey, parent: TenantKeyVersion) -> bytes:
    return l3_aad_of(
        key_id=key.pk,
        version=l3v.version,
        parent_key_id=parent.key_id,
        parent_version=parent.version,
    )


def l3_aad_of(
    *,
    key_id: UUID | str,
    version: int,
    parent_key_id: UUID | str,
    parent_version: int,
    tenant_uid: UUID | str | None = None,
) -> bytes:
    """`l3_aad` from plain values (ids as UUIDs or their strings): bulk rewraps build no model
    objects per row, and pass the current tenant's uid once rather than look it up per row."""
    return crypto.wrap_aad(
        "L3",
        tenant=tenant().uid if tenant_uid is None else tenant_uid,
        key=key_id,
        version=version,
        parent=f"{parent_key_id}/{parent_version}",
    )


def l1_encrypt(version: CustomerKeyVersion, plaintext: bytes, aad: bytes) -> bytes:
    """Wrap under the L1 version, in the keystore that holds it."""
    return roots.root_encrypt(version, plaintext, aad)


def l2_unwrap(l2v: TenantKeyVersion) -> bytes:
    """The raw L2 version, unwrapped by its L1 version in its keystore: the only path that asks
    a keystore to decrypt. Uncached: `l2_material` caches; rewrap jobs re-encrypt it."""
    return roots.root_decrypt(l2v.parent, bytes(l2v.wrapped), l2_aad(l2v, l2v.key))


def l2_material(l2v: TenantKeyVersion) -> AESGCM:
    """The unwrapped L2 version, from this process's cache when there."""
    schema, epoch = observe_epoch()
    cache = key_cache()
    cache_key = f"l2:{l2v.pk}"
    cipher = cache.get(schema, cache_key)
    if cipher is None:
        cipher = AESGCM(l2_unwrap(l2v))
        cache.put(schema, cache_key, cipher, epoch)
    return cipher


def ensure_chain_usable(l3: ServiceKey) -> None:
    l2 = l3.tenant_key
    l1 = l2.customer_key
    ensure_usable(l1, f"customer key {l1.name!r}")
    ensure_usable(l2, f"tenant key of {l1.name!r}")
    ensure_usable(l3, f"service key {l3.name!r}")


def load_service_key(name: str) -> LoadedServiceKey:
    """The usable service key `name` with its enabled versions unwrapped, from cache if fresh."""
    schema, epoch = observe_epoch()
    cache = key_cache()
    loaded = cache.get(schema, f"l3:{name}")
    if loaded is not None:
        return loaded
    l3 = ServiceKey.objects.select_related("tenant_key__customer_key").filter(name=name).first()
    if l3 is None:
        raise KeyNotFound(f"No service key {name!r}.")
    ensure_chain_usable(l3)
    versions: dict[int, LoadedVersion] = {}
    for l3v in ServiceKeyVersion.objects.filter(key=l3, state=VersionState.ENABLED).select_related(
        "parent__parent", "parent__key"
    ):
        raw = crypto.unseal(
            l2_material(l3v.parent), bytes(l3v.wrapped), l3_aad(l3v, l3, l3v.parent)
        )
        versions[l3v.version] = LoadedVersion.of(
            raw, tenant=tenant().uid, key_id=l3.pk, version=l3v.version, row_id=l3v.pk
        )
    loaded = LoadedServiceKey(
        schema=schema,
        key_id=l3.pk,
        name=l3.name,
        tenant_uid=tenant().uid,
        primary=l3.primary_version,
        versions=versions,
        epoch=epoch,
    )
    cache.put(schema, f"l3:{name}", loaded, epoch)
    return loaded


def find_key(key_id: UUID | str) -> CustomerKey | TenantKey | ServiceKey:
    """Any level's key by id."""
    for model in (CustomerKey, TenantKey, ServiceKey):
        key = model.objects.filter(pk=key_id).first()
        if key is not None:
            return key
    raise KeyNotFound()
