"""The process's root-key provider, chosen by ``KCM_HSM_PROVIDER``.

Created on first use in each process, never inherited across a fork: a forked child builds
its own, which opens its own HSM session.
"""

from __future__ import annotations

import os
import threading

from django.conf import settings

from apps.keychain.providers.base import RootKeyProvider

_lock = threading.Lock()
_provider: RootKeyProvider | None = None
_provider_pid: int | None = None


def get_provider() -> RootKeyProvider:
    """The per-process provider singleton; raises `ProviderError` if it cannot be built."""
    global _provider, _provider_pid
    with _lock:
        if _provider is None or _provider_pid != os.getpid():
            _provider = _build()
            _provider_pid = os.getpid()
        return _provider


def reset_provider() -> None:
    """Forget the singleton so that the next `get_provider` builds a new one (for tests)."""
    global _provider, _provider_pid
    with _lock:
        _provider, _provider_pid = None, None


def _build() -> RootKeyProvider:
    if settings.KCM_HSM_PROVIDER == "software":
        from apps.keychain.providers.software import SoftwareProvider

        return SoftwareProvider.from_settings()
    from apps.keychain.providers.pkcs11 import Pkcs11Provider

    return Pkcs11Provider.from_settings()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
