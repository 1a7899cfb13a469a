"""The platform's own keys in the platform keystore: created once at deploy, read at run time.

`platform_keys_init` (run by `manage.py kcm_migrate` and `manage.py kcm_keys init`) creates every
missing platform key under a PostgreSQL advisory lock, so that two deploys at once create each
key once; nothing creates one on a request path. At run time `platform_key` only reads, and a
missing key is a deployment error that says which command to run.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass

from django.db import connection, transaction

from apps.keystores.base import KeystoreUnavailable
from apps.keystores.models import PlatformKey
from apps.keystores.registry import PLATFORM_CAPABILITIES, platform_keystore

log = logging.getLogger(__name__)

# An arbitrary constant: the advisory lock that serialises platform key creation.
_INIT_LOCK = 0x4B434D_4B455953  # "KCM" "KEYS"


@dataclass(frozen=True)
class Purpose:
    name: str
    kind: str  # "aes" (wrap/unwrap) or "signing" (ECDSA P-256)
    label: str


# Seals HYOK credentials (KMIP client keys, PINs) that tenants give.
HYOK_CREDENTIALS = Purpose("hyok-credentials", "aes", "kcm platform hyok-credentials root")
# Signs audit checkpoints and export manifests.
AUDIT_SIGNING = Purpose("audit-checkpoints", "signing", "kcm audit checkpoints")
PURPOSES = (HYOK_CREDENTIALS, AUDIT_SIGNING)


class PlatformKeyMissing(KeystoreUnavailable):
    """A platform key was never created: the deployment skipped `kcm_keys init`."""

    code = "platform_key_missing"


_cache: dict[str, PlatformKey] = {}
_cache_lock = threading.Lock()


def platform_key(purpose: Purpose) -> PlatformKey:
    """The platform key for `purpose` (read-only; cached per process, since it never changes)."""
    with _cache_lock:
        cached = _cache.get(purpose.name)
    if cached is not None:
        return cached
    key = PlatformKey.objects.filter(purpose=purpose.name).first()
    if key is None:
        raise PlatformKeyMissing(
            f"the platform key {purpose.name!r} does not exist: run `manage.py kcm_keys init` "
            "(part of `manage.py kcm_migrate`)"
        )
    with _cache_lock:
        _cache[purpose.name] = key
    return key


def platform_key_by_fingerprint(fingerprint: str) -> PlatformKey | None:
    """The signing key with this public-key fingerprint (older checkpoints name theirs)."""
    return PlatformKey.objects.filter(fingerprint=fingerprint).first()


def forget_platform_keys() -> None:
    """Drop the per-process cache (tests that recreate the database)."""
    with _cache_lock:
        _cache.clear()


def platform_keys_init() -> list[str]:
    """Create every missing platform key in the platform keystore; the purposes created.

    Refuses a keystore that lacks a capability the platform needs, naming it.
    """
    keystore = platform_keystore()
    keystore.require(*PLATFORM_CAPABILITIES)
    created = []
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_INIT_LOCK])
        existing = set(PlatformKey.objects.values_list("purpose", flat=True))
        for purpose in PURPOSES:
            if purpose.name in existing:
                continue
            if purpose.kind == "aes":
                handle = keystore.create_root_key(label=purpose.label)
                PlatformKey.objects.create(purpose=purpose.name, handle=handle)
            else:
                handle = keystore.create_signing_key(label=purpose.label)
                public = keystore.public_key_der(handle)
                PlatformKey.objects.create(
                    purpose=purpose.name,
                    handle=handle,
                    public_key_der=public,
                    fingerprint=hashlib.sha256(public).hexdigest(),
                )
            log.info("platform key %s created", purpose.name)
            created.append(purpose.name)
    forget_platform_keys()
    return created
