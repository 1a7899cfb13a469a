"""The client secret sealed like a HYOK key manager's credentials (apps.keychain.roots): with
AES-256-GCM under the platform's credentials key in the HSM, with associated data naming the
tenant and the provider, so that a sealed secret copied to another tenant or provider (or into
a key manager's credentials) does not open."""

from __future__ import annotations

from uuid import UUID

from apps.core.errors import ServiceUnavailable
from apps.keystores.base import KeystoreError
from apps.keystores.platform import HYOK_CREDENTIALS, platform_key
from apps.keystores.registry import platform_keystore


def _aad(tenant_uid: UUID, provider_uid: UUID) -> bytes:
    return f"kcm:sso-client-secret:v1|tenant={tenant_uid}|provider={provider_uid}".encode()


def secret_seal(*, tenant_uid: UUID, provider_uid: UUID, secret: str) -> bytes:
    try:
        return platform_keystore().encrypt(
            platform_key(HYOK_CREDENTIALS).handle, secret.encode(), _aad(tenant_uid, provider_uid)
        )
    except KeystoreError as exc:
        raise ServiceUnavailable(
            f"The HSM cannot seal the client secret ({exc.code}).", code="hsm_unavailable"
        ) from None


def secret_open(*, tenant_uid: UUID, provider_uid: UUID, sealed: bytes) -> str:
    try:
        plaintext = platform_keystore().decrypt(
            platform_key(HYOK_CREDENTIALS).handle, sealed, _aad(tenant_uid, provider_uid)
        )
    except KeystoreError as exc:
        raise ServiceUnavailable(
            f"The HSM cannot open the client secret ({exc.code}).", code="hsm_unavailable"
        ) from None
    return plaintext.decode()
