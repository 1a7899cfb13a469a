"""Reads of the key chain, shared by console and API."""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from uuid import UUID

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from django.utils import timezone

from apps.keychain import byok
from apps.keychain.errors import KeyNotFound
from apps.keychain.models import (
    CustomerKey,
    CustomerKeyVersion,
    ExternalKeyManager,
    ImportToken,
    KeyBase,
    KeyState,
    Origin,
    ServiceKey,
    ServiceKeyVersion,
    TenantKeyVersion,
)


def _versions(key: KeyBase, rows: Any) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        item: dict[str, Any] = {
            "version": row.version,
            "state": row.state,
            "primary": row.version == key.primary_version,
            "created_at": row.created_at,
        }
        if hasattr(row, "parent_id"):
            item["parent_version"] = row.parent.version
        if isinstance(row, ServiceKeyVersion):
            item["usage_reserved"] = row.usage_reserved
        if isinstance(row, CustomerKeyVersion):
            item["deletion_date"] = row.deletion_date
        out.append(item)
    return out


def _key(key: KeyBase, level: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(key.pk),
        "level": level,
        "state": key.state,
        "state_reason": key.state_reason,
        "primary_version": key.primary_version,
        "deletion_date": key.deletion_date,
        "destroyed_at": key.destroyed_at,
        "created_at": key.created_at,
        **extra,
    }


def service_key_detail(l3: ServiceKey) -> dict[str, Any]:
    versions = l3.versions.select_related("parent").order_by("version")
    return _key(
        l3,
        "L3",
        name=l3.name,
        description=l3.description,
        tenant_key_id=str(l3.tenant_key_id),
        versions=_versions(l3, versions),
    )


def chain_tree() -> list[dict[str, Any]]:
    """Every L1 with its L2 and the L3s below it, with versions and states: four queries."""
    l1s = list(
        CustomerKey.objects.select_related("tenant_key")
        .prefetch_related("versions")
        .order_by("created_at")
    )
    l2_versions = TenantKeyVersion.objects.select_related("parent").order_by("version")
    by_l2: dict[Any, list[TenantKeyVersion]] = {}
    for l2v in l2_versions:
        by_l2.setdefault(l2v.key_id, []).append(l2v)
    l3s = ServiceKey.objects.prefetch_related("versions__parent").order_by("name")
    l3_by_l2: dict[Any, list[ServiceKey]] = {}
    for l3 in l3s:
        l3_by_l2.setdefault(l3.tenant_key_id, []).append(l3)
    tree = []
    for l1 in l1s:
        l2 = l1.tenant_key
        tree.append(
            _key(
                l1,
                "L1",
                name=l1.name,
                description=l1.description,
                origin=l1.origin,
                versions=_versions(l1, sorted(l1.versions.all(), key=lambda v: v.version)),
                tenant_key=_key(
                    l2,
                    "L2",
                    versions=_versions(l2, by_l2.get(l2.pk, [])),
                    service_keys=[
                        _key(
                            l3,
                            "L3",
                            name=l3.name,
                            description=l3.description,
                            versions=_versions(
                                l3, sorted(l3.versions.all(), key=lambda v: v.version)
                            ),
                        )
                        for l3 in l3_by_l2.get(l2.pk, [])
                    ],
                ),
            )
        )
    return tree


def chain_summary() -> dict[str, int]:
    return {
        "customer_keys": CustomerKey.objects.count(),
        "service_keys": ServiceKey.objects.count(),
        "enabled_service_keys": ServiceKey.objects.filter(state=KeyState.ENABLED).count(),
        "pending_deletion": CustomerKey.objects.filter(state=KeyState.PENDING_DELETION).count()
        + ServiceKey.objects.filter(state=KeyState.PENDING_DELETION).count(),
    }


# --- customer-controlled L1s: BYOK material and HYOK key managers ---------------------


def customer_key_material(l1: CustomerKey) -> dict[str, Any]:
    """An L1 with where each version's material is: key check values and expiries (BYOK), or
    the external references (HYOK). Never material, never credentials."""
    versions = []
    expires = None  # the primary version's, from the rows read anyway
    for version in l1.versions.select_related("external_manager").order_by("version"):
        if version.version == l1.primary_version:
            expires = version.material_expires_at
        item: dict[str, Any] = {
            "version": version.version,
            "state": version.state,
            "primary": version.version == l1.primary_version,
            "created_at": version.created_at,
            "deletion_date": version.deletion_date,
        }
        if l1.origin == Origin.BYOK:
            item.update(
                key_check_value=version.key_check_value,
                key_check_value_cmac=version.key_check_value_cmac,
                material_expires_at=version.material_expires_at,
                material_present=bool(version.handle),
            )
        elif l1.origin == Origin.HYOK:
            manager = version.external_manager
            item.update(
                key_manager_id=str(manager.pk) if manager else None,
                key_manager=manager.name if manager else None,
                external_key_id=version.external_key_id,
            )
        versions.append(item)
    return {
        "id": str(l1.pk),
        "level": "L1",
        "name": l1.name,
        "origin": l1.origin,
        "state": l1.state,
        "state_reason": l1.state_reason,
        "primary_version": l1.primary_version,
        "material_expires_at": expires,
        "tenant_key_id": str(l1.tenant_key.pk),
        "versions": versions,
    }


def import_parameters(token: ImportToken) -> dict[str, Any]:
    der = bytes(token.public_key_der)
    pem = serialization.load_der_public_key(der).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "key_id": str(token.key_id),
        "import_token": byok.import_token_value(token),
        "algorithm": token.algorithm,
        "wrapping_key_bits": token.wrapping_key_bits,
        "public_key_pem": pem.decode(),
        "public_key_der": base64.b64encode(der).decode(),
        "public_key_sha256": hashlib.sha256(der).hexdigest(),
        "expires_at": token.expires_at,
        "used_at": token.used_at,
    }


def open_import_tokens(l1: CustomerKey) -> list[ImportToken]:
    return list(
        l1.import_tokens.filter(used_at__isnull=True, expires_at__gt=timezone.now())
        .exclude(wrapping_handle="")
        .order_by("-created_at")
    )


def key_manager_detail(manager: ExternalKeyManager) -> dict[str, Any]:
    """The manager's settings that are not secret; credentials are never returned."""
    config = dict(manager.settings)
    shown: dict[str, Any] = {
        k: config[k]
        for k in ("host", "port", "server_name", "library", "token_label")
        if k in config
    }
    for field in ("ca_pem", "client_cert_pem"):
        if field in config:
            shown[field.replace("_pem", "_sha256")] = _certificate_fingerprint(config[field])
    return {
        "id": str(manager.pk),
        "name": manager.name,
        "kind": manager.kind,
        "settings": shown,
        "created_at": manager.created_at,
        "updated_at": manager.updated_at,
    }


def _certificate_fingerprint(pem: str) -> str:
    """SHA-256 of the (first) certificate's DER, as `openssl x509 -fingerprint -sha256` shows."""
    certificate = x509.load_pem_x509_certificates(pem.encode())[0]
    return certificate.fingerprint(hashes.SHA256()).hex()


def customer_key_material_of(key_id: UUID | str) -> dict[str, Any]:
    """`customer_key_material` of the L1 `key_id`; `KeyNotFound` if there is none."""
    l1 = CustomerKey.objects.select_related("tenant_key").filter(pk=key_id).first()
    if l1 is None:
        raise KeyNotFound("No such customer key.")
    return customer_key_material(l1)
