"""Connectors to customers' key managers, one per manager and process, and their credentials.

Credentials a customer gives (a KMIP client key, a PIN) are sealed with AES-256-GCM under the
platform's credentials root key, which lives in the HSM (created on first use, its handle kept
in the public schema as a `PlatformKey`), with associated data naming the tenant and the
manager: a sealed blob copied to another tenant or manager does not open. They are opened
only in memory, to build a connector.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction

from apps.keychain.connectors.base import (
    CircuitBreaker,
    ExternalConfigError,
    KeyManagerConnector,
)
from apps.keychain.errors import HsmUnavailable
from apps.keychain.models import ExternalKeyManager
from apps.keychain.providers import ProviderError, RootKeyIntegrityError, get_provider
from apps.tenants.models import PlatformKey

log = logging.getLogger(__name__)

CREDENTIALS_PURPOSE = "hyok-credentials"


def _credentials_aad(tenant_uid: UUID, manager_id: UUID) -> bytes:
    return f"kcm:hyok-credentials:v1|tenant={tenant_uid}|manager={manager_id}".encode()


def credentials_root() -> str:
    """The handle of the platform's credentials root key, created in the HSM on first use."""
    key = PlatformKey.objects.filter(purpose=CREDENTIALS_PURPOSE).first()
    if key is not None:
        return key.handle
    provider = get_provider()
    handle = provider.create_root_key(label="kcm platform hyok-credentials root")
    try:
        with transaction.atomic():
            PlatformKey.objects.create(purpose=CREDENTIALS_PURPOSE, handle=handle)
    except IntegrityError:
        # Another process created it first: use theirs, drop ours.
        provider.destroy(handle)
        return PlatformKey.objects.get(purpose=CREDENTIALS_PURPOSE).handle
    return handle


def credentials_seal(*, tenant_uid: UUID, manager_id: UUID, credentials: dict[str, str]) -> bytes:
    plaintext = json.dumps(credentials, sort_keys=True).encode()
    try:
        return get_provider().encrypt(
            credentials_root(), plaintext, _credentials_aad(tenant_uid, manager_id)
        )
    except ProviderError as exc:
        raise HsmUnavailable(f"The HSM cannot seal the credentials ({exc.code}).") from None


def credentials_open(*, tenant_uid: UUID, manager_id: UUID, sealed: bytes) -> dict[str, str]:
    """The credentials, in memory. Our HSM failing is not the customer's key manager failing:
    that is `HsmUnavailable` (503), and changes no key's state."""
    try:
        plaintext = get_provider().decrypt(
            credentials_root(), sealed, _credentials_aad(tenant_uid, manager_id)
        )
    except RootKeyIntegrityError:
        raise ExternalConfigError("the stored credentials do not belong to this manager") from None
    except ProviderError as exc:
        raise HsmUnavailable(
            f"The HSM cannot open the key manager's credentials ({exc.code})."
        ) from None
    opened: dict[str, str] = json.loads(plaintext)
    return opened


@dataclass
class Connection:
    connector: KeyManagerConnector
    breaker: CircuitBreaker
    stamp: str


_lock = threading.Lock()
_connections: dict[UUID, Connection] = {}


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    for connection in _connections.values():
        connection.connector.abandon()
    _connections.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def connection_for(manager: ExternalKeyManager, *, tenant_uid: UUID) -> Connection:
    """This process's connector and circuit breaker for `manager`; rebuilt when the manager's
    settings or credentials change. A forked child starts without any."""
    stamp = manager.updated_at.isoformat()
    with _lock:
        current = _connections.get(manager.pk)
        if current is not None and current.stamp == stamp:
            return current
    connector = build_connector(
        manager.kind,
        manager.settings,
        credentials_open(
            tenant_uid=tenant_uid, manager_id=manager.pk, sealed=bytes(manager.credentials)
        ),
    )
    fresh = Connection(
        connector=connector,
        breaker=CircuitBreaker(
            failures=settings.KCM_HYOK_BREAKER_FAILURES,
            reset_after=settings.KCM_HYOK_BREAKER_RESET_SECONDS,
        ),
        stamp=stamp,
    )
    with _lock:
        old = _connections.get(manager.pk)
        if old is not None and old.stamp == stamp:
            connector.close()
            return old
        _connections[manager.pk] = fresh
    if old is not None:
        old.connector.close()
    return fresh


def forget_connections() -> None:
    """Close and drop every connector of this process (tests; settings changes)."""
    with _lock:
        connections = list(_connections.values())
        _connections.clear()
    for connection in connections:
        connection.connector.close()


def build_connector(
    kind: str, config: dict[str, Any], credentials: dict[str, str]
) -> KeyManagerConnector:
    """A connector from validated settings (see hyok.key_manager_settings) and credentials."""
    timeout = float(settings.KCM_HYOK_TIMEOUT_SECONDS)
    try:
        if kind == ExternalKeyManager.Kind.KMIP:
            from apps.keychain.connectors.kmip import KmipConnector, tls_context

            return KmipConnector(
                host=config["host"],
                port=int(config["port"]),
                server_name=config.get("server_name") or None,
                context=tls_context(
                    ca_pem=config["ca_pem"],
                    client_cert_pem=config["client_cert_pem"],
                    client_key_pem=credentials["client_key_pem"],
                ),
                timeout=timeout,
                username=credentials.get("username") or None,
                password=credentials.get("password") or None,
            )
        if kind == ExternalKeyManager.Kind.PKCS11:
            from apps.keychain.connectors.pkcs11 import Pkcs11Connector

            return Pkcs11Connector(
                library=config["library"],
                token_label=config["token_label"],
                pin=credentials["pin"],
                timeout=timeout,
            )
    except KeyError as exc:
        raise ExternalConfigError(f"missing setting or credential {exc.args[0]!r}") from None
    except ProviderError as exc:
        raise ExternalConfigError(f"the token cannot be used ({exc.code})") from None
    raise ExternalConfigError(f"unknown key manager kind {kind!r}")
