"""Which keystore serves a key: the process's platform keystore (``KCM_HSM_PROVIDER``), and one
keystore per customer key manager (HYOK), each behind its own circuit breaker.

Both are built on first use in each process and never inherited across a fork: a forked child
builds its own, which opens its own HSM session or connections.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from apps.core.forks import after_fork_in_child
from apps.keystores.base import (
    CAP_CREATE,
    CAP_SIGN,
    CAP_WRAP,
    CapabilityNotSupported,
    Keystore,
    KeystoreConfigError,
    KeystoreError,
)
from apps.keystores.breaker import CircuitBreaker

log = logging.getLogger(__name__)

# What KCM needs of the platform keystore: wrap L2s, create L1s, sign audit checkpoints.
PLATFORM_CAPABILITIES = (CAP_WRAP, CAP_CREATE, CAP_SIGN)

_lock = threading.Lock()
_platform: Keystore | None = None
_platform_pid: int | None = None


def platform_keystore() -> Keystore:
    """The per-process platform keystore; raises `KeystoreError` if it cannot be built."""
    global _platform, _platform_pid
    with _lock:
        if _platform is None or _platform_pid != os.getpid():
            _platform, _platform_pid = _build_platform(), os.getpid()
        return _platform


def platform_keystore_check() -> None:
    """At process start (each web and worker process, after the fork): refuse to serve with a
    keystore that lacks a capability KCM needs, naming the missing mechanisms. A keystore that
    is only unavailable now is not refused: requests get 503 until it is back."""
    try:
        platform_keystore().require(*PLATFORM_CAPABILITIES)
    except CapabilityNotSupported:
        raise
    except KeystoreError as exc:
        log.warning("platform keystore not available at start (%s); will retry on use", exc)


def reset_platform_keystore() -> None:
    """Forget the singleton so that the next `platform_keystore` builds a new one (tests)."""
    global _platform, _platform_pid
    with _lock:
        _platform, _platform_pid = None, None


def _build_platform() -> Keystore:
    if settings.KCM_HSM_PROVIDER == "software":
        from apps.keystores.software import SoftwareKeystore

        return SoftwareKeystore.from_settings()
    from apps.keystores.pkcs11.keystore import Pkcs11Keystore

    return Pkcs11Keystore.from_settings()


def platform_keystore_health() -> dict[str, object]:
    """The readiness report of the platform keystore: not ok when it does not answer, or lacks
    a capability KCM needs (the message names the missing mechanisms)."""
    try:
        keystore = platform_keystore()
    except KeystoreError as exc:
        return {"ok": False, "error": str(exc)}
    report = keystore.health()
    if report.get("ok"):
        try:
            keystore.require(*PLATFORM_CAPABILITIES)
        except KeystoreError as exc:
            return {**report, "ok": False, "error": str(exc)}
    return report


# --- customer key managers ----------------------------------------------------------------

KINDS = ("kmip", "pkcs11")


@dataclass
class Connection:
    """A customer key manager's keystore in this process and the breaker in front of it."""

    keystore: Keystore
    breaker: CircuitBreaker
    stamp: str


_connections: dict[Any, Connection] = {}


def external_connection(key: Any, *, stamp: str, build: Callable[[], Keystore]) -> Connection:
    """This process's keystore for the key manager `key`, rebuilt with `build` when `stamp`
    (its settings' version) changed."""
    with _lock:
        current = _connections.get(key)
        if current is not None and current.stamp == stamp:
            return current
    keystore = build()
    fresh = Connection(
        keystore=keystore,
        breaker=CircuitBreaker(
            failures=settings.KCM_HYOK_BREAKER_FAILURES,
            reset_after=settings.KCM_HYOK_BREAKER_RESET_SECONDS,
            manager_id=str(key),
        ),
        stamp=stamp,
    )
    with _lock:
        old = _connections.get(key)
        if old is not None and old.stamp == stamp:
            keystore.close()
            return old
        _connections[key] = fresh
    if old is not None:
        old.keystore.close()
    return fresh


def breaker_open(key: Any) -> bool | None:
    """Whether this process's circuit breaker for the key manager `key` is open; None when this
    process has not talked to it yet (nothing is built here: a health view must not connect)."""
    with _lock:
        current = _connections.get(key)
    return None if current is None else current.breaker.is_open


def forget_connections() -> None:
    """Close and drop every key-manager keystore of this process (tests; settings changes)."""
    with _lock:
        connections = list(_connections.values())
        _connections.clear()
    for connection in connections:
        connection.keystore.close()


def external_keystore(
    kind: str, config: dict[str, Any], credentials: dict[str, str], *, owner: str
) -> Keystore:
    """A customer key manager's keystore from validated settings and opened credentials;
    `owner` (opaque here: a tenant's uid) is who may use it (a PKCS#11 token serves one)."""
    timeout = float(settings.KCM_HYOK_TIMEOUT_SECONDS)
    try:
        if kind == "kmip":
            from apps.keystores.kmip import KmipKeystore, tls_context

            return KmipKeystore(
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
        if kind == "pkcs11":
            from apps.keystores.pkcs11.external import ExternalPkcs11Keystore

            return ExternalPkcs11Keystore(
                library=config["library"],
                token_label=config["token_label"],
                pin=credentials["pin"],
                timeout=timeout,
                owner=owner,
            )
    except KeyError as exc:
        raise KeystoreConfigError(f"missing setting or credential {exc.args[0]!r}") from None
    except KeystoreConfigError:
        raise
    except KeystoreError as exc:
        raise KeystoreConfigError(f"the token cannot be used ({exc.code})") from None
    raise KeystoreConfigError(f"unknown key manager kind {kind!r}")


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    for connection in _connections.values():
        connection.keystore.abandon()
    _connections.clear()


after_fork_in_child(_after_fork_in_child)
