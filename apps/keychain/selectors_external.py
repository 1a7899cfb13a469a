"""Reads of customer-controlled L1s (BYOK, HYOK), shared by the console and the API."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from django.utils import timezone

from apps.keychain import byok
from apps.keychain.models import CustomerKey, ExternalKeyManager, ImportToken, Origin


def customer_key_material(l1: CustomerKey) -> dict[str, Any]:
    """An L1 with where each version's material is: key check values and expiries (BYOK), or
    the external references (HYOK). Never material, never credentials."""
    versions = []
    for version in l1.versions.select_related("external_manager").order_by("version"):
        item: dict[str, Any] = {
            "version": version.version,
            "state": version.state,
            "primary": version.version == l1.primary_version,
            "created_at": version.created_at,
        }
        if l1.origin == Origin.BYOK:
            item.update(
                key_check_value=version.key_check_value,
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
        "material_expires_at": l1.material_expires_at,
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
