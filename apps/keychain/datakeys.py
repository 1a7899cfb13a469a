"""Cryptographic operations for key users: data keys (L4) and small payloads under an L3.

After warm-up these touch neither the HSM nor the key tables: the service key comes from the
per-process cache, and usage is reserved in blocks (one UPDATE per KCM_USAGE_BLOCK uses).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connection

from apps.core import metrics
from apps.core.errors import KcmError, ValidationFailed
from apps.core.tenancy import Principal
from apps.keychain import crypto
from apps.keychain.cache import LoadedServiceKey, LoadedVersion
from apps.keychain.chain import load_service_key
from apps.keychain.errors import (
    KeyVersionUnavailable,
    UsageLimitReached,
    WrongKeyCiphertext,
    WrongTenantCiphertext,
)
from apps.tenants.grants import KeyGrant, context_use_check, grant_of, key_use_check

DATA_KEY_BYTES = 32
MAX_PAYLOAD_BYTES = 4096
MAX_BATCH = 1000

# The audit action of each operation; a batch request is audited once as "<action>.batch" with
# its item counts. The dashboard counts operations from these events.
AUDIT_ACTIONS = {
    "generate-data-key": "datakey.generate",
    "decrypt-data-key": "datakey.decrypt",
    "encrypt": "data.encrypt",
    "decrypt": "data.decrypt",
    "rewrap": "data.rewrap",
}
BATCH_SUFFIX = ".batch"


def b64decode(value: Any, field: str) -> bytes:
    """Strict base64 (docs/envelope.md): the standard alphabet, padded, nothing else, and
    canonical (unused bits zero), so that each byte string has exactly one text form."""
    if not isinstance(value, str):
        raise ValidationFailed(f"{field} must be a base64 string.", code="invalid_base64")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        data = None
    if data is None or b64(data) != value:
        raise ValidationFailed(
            f"{field} is not valid base64 (standard alphabet, padded, canonical).",
            code="invalid_base64",
        )
    return data


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _take_uses(loaded: LoadedServiceKey, count: int) -> LoadedVersion:
    """The primary version, with `count` encryptions taken from this process's reservation."""
    version = loaded.versions.get(loaded.primary)
    if version is None:
        raise KeyVersionUnavailable("The primary version of this service key is not usable.")
    with loaded.lock:
        if loaded.uses_left < count:
            block = max(settings.KCM_USAGE_BLOCK, count)
            granted, reserved = _reserve_exact(version, block)
            loaded.uses_left += granted
            _usage_observe(loaded, version, reserved)
        if loaded.uses_left < count:
            raise UsageLimitReached(
                f"Version {version.version} of service key {loaded.name!r} reached its limit of "
                f"{settings.KCM_GCM_USAGE_LIMIT} encryptions; rotate the key."
            )
        loaded.uses_left -= count
    return version


def _reserve_exact(version: LoadedVersion, wanted: int) -> tuple[int, int | None]:
    """(uses granted, the version's reserved total after it)."""
    limit = settings.KCM_GCM_USAGE_LIMIT
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH old AS (SELECT usage_reserved FROM keychain_servicekeyversion"
            " WHERE id = %s FOR UPDATE)"
            " UPDATE keychain_servicekeyversion v"
            " SET usage_reserved = LEAST(old.usage_reserved + %s, %s)"
            " FROM old WHERE v.id = %s"
            " RETURNING v.usage_reserved - old.usage_reserved, v.usage_reserved",
            [version.row_id, wanted, limit, version.row_id],
        )
        row = cursor.fetchone()
    return (int(row[0]), int(row[1])) if row else (0, None)


def _usage_observe(loaded: LoadedServiceKey, version: LoadedVersion, reserved: int | None) -> None:
    # Once per reservation block (KCM_USAGE_BLOCK uses), from the row the UPDATE returned.
    if reserved is not None:
        labels = (metrics.tenant_label(), str(loaded.key_id), str(version.version))
        metrics.GCM_USAGE_RESERVED.labels(*labels).set(reserved)
        metrics.GCM_USAGE_LIMIT.set(settings.KCM_GCM_USAGE_LIMIT)


def new_data_key() -> bytes:
    """A fresh random data key; replaceable like crypto.new_nonce, for the same reason."""
    return os.urandom(DATA_KEY_BYTES)


def _open(loaded: LoadedServiceKey, blob: bytes, context: Any, kind: int) -> tuple[bytes, int]:
    """(plaintext, version) of an envelope of `kind`. The order of the checks, and the error each
    raises, is part of the format: docs/envelope.md, "Opening"."""
    envelope = crypto.envelope_parse(blob)
    if envelope.tenant != loaded.tenant_uid:
        raise WrongTenantCiphertext()
    if envelope.key_id != loaded.key_id:
        raise WrongKeyCiphertext()
    if envelope.kind != kind:
        raise crypto.CiphertextMalformed(
            "This ciphertext is a "
            + ("data key" if envelope.kind == crypto.KIND_DATA_KEY else "payload")
            + "; use the matching operation."
        )
    version = loaded.versions.get(envelope.version)
    if version is None:
        raise KeyVersionUnavailable(
            f"Version {envelope.version} of this service key is retired, destroyed or unknown."
        )
    canonical, check = version.memo.get(context)
    if not hmac.compare_digest(envelope.check, check):
        raise crypto.ContextMismatch()
    return crypto.unseal(
        version.cipher, envelope.body, envelope.header + canonical
    ), envelope.version


def _seal(version: LoadedVersion, kind: int, context: Any, plaintext: bytes) -> bytes:
    header, aad = version.memo.sealing(kind, context)
    return crypto.envelope_seal(cipher=version.cipher, header=header, aad=aad, plaintext=plaintext)


# --- single operations on a loaded key: each takes and returns JSON-ready dicts ---------
# Contexts are passed raw: the version's memo validates and canonicalises them.


def _generate(
    loaded: LoadedServiceKey, version: LoadedVersion, item: dict[str, Any]
) -> dict[str, Any]:
    data_key = new_data_key()
    result = {
        "ciphertext": b64(_seal(version, crypto.KIND_DATA_KEY, item.get("context"), data_key)),
        "key_version": version.version,
    }
    if item.get("include_plaintext", True):
        result["plaintext"] = b64(data_key)
    return result


def _decrypt_data_key(loaded: LoadedServiceKey, item: dict[str, Any]) -> dict[str, Any]:
    blob = b64decode(item.get("ciphertext"), "ciphertext")
    plaintext, version = _open(loaded, blob, item.get("context"), crypto.KIND_DATA_KEY)
    return {"plaintext": b64(plaintext), "key_version": version}


def _encrypt(
    loaded: LoadedServiceKey, version: LoadedVersion, item: dict[str, Any]
) -> dict[str, Any]:
    plaintext = b64decode(item.get("plaintext"), "plaintext")
    if len(plaintext) > MAX_PAYLOAD_BYTES:
        raise ValidationFailed(
            f"Payloads are limited to {MAX_PAYLOAD_BYTES} bytes; "
            "encrypt larger data with a data key.",
            code="payload_too_large",
        )
    return {
        "ciphertext": b64(_seal(version, crypto.KIND_PAYLOAD, item.get("context"), plaintext)),
        "key_version": version.version,
    }


def _decrypt(loaded: LoadedServiceKey, item: dict[str, Any]) -> dict[str, Any]:
    blob = b64decode(item.get("ciphertext"), "ciphertext")
    plaintext, version = _open(loaded, blob, item.get("context"), crypto.KIND_PAYLOAD)
    return {"plaintext": b64(plaintext), "key_version": version}


def _rewrap(
    loaded: LoadedServiceKey, version: LoadedVersion, item: dict[str, Any]
) -> dict[str, Any]:
    blob = b64decode(item.get("ciphertext"), "ciphertext")
    kind = crypto.envelope_parse(blob).kind
    plaintext, old = _open(loaded, blob, item.get("context"), kind)
    return {
        "ciphertext": b64(_seal(version, kind, item.get("context"), plaintext)),
        "key_version": version.version,
        "previous_version": old,
    }


OPERATIONS: dict[str, tuple[bool, Callable[..., dict[str, Any]]]] = {
    # name: (encrypts under the primary version?, function)
    "generate-data-key": (True, _generate),
    "decrypt-data-key": (False, _decrypt_data_key),
    "encrypt": (True, _encrypt),
    "decrypt": (False, _decrypt),
    "rewrap": (True, _rewrap),
}


def run(
    *,
    service_key: str,
    operation: str,
    item: dict[str, Any],
    principal: Principal | None = None,
) -> dict[str, Any]:
    """One operation on one item; raises a KcmError on failure. The principal's key grant must
    list the service key and its context constraints be met (None: an internal caller, such as
    a tool or test, that acts for nobody)."""
    encrypts, func = OPERATIONS[operation]
    loaded: LoadedServiceKey | None = None
    try:
        if principal is not None:
            grant = grant_of(principal)
            key_use_check(grant=grant, service_key=service_key)
            context_use_check(grant=grant, context=item.get("context"))
        loaded = load_service_key(service_key)
        result = func(loaded, _take_uses(loaded, 1), item) if encrypts else func(loaded, item)
    except KcmError as exc:
        _count(loaded, operation, exc.code)
        raise
    _count(loaded, operation, metrics.OK)
    return result


def _granted_item(grant: KeyGrant | None, item: dict[str, Any] | KcmError) -> Any:
    if isinstance(item, dict):
        try:
            context_use_check(grant=grant, context=item.get("context"))
        except KcmError as exc:
            return exc
    return item


def _count(loaded: LoadedServiceKey | None, operation: str, outcome: str, count: int = 1) -> None:
    # By the key's id, never its name (which the caller wrote); "unknown" if it was not loaded.
    key_id = str(loaded.key_id) if loaded is not None else metrics.UNKNOWN
    metrics.datakey_operation(metrics.tenant_label(), key_id, operation, outcome, count)


def run_batch(
    *,
    service_key: str,
    operation: str,
    items: list[dict[str, Any] | KcmError],
    principal: Principal | None = None,
) -> list[dict[str, Any]]:
    """Up to MAX_BATCH items; each gets its own result or error (an item given as a KcmError
    was refused by the caller's parsing). A key that cannot be used at all, or that the
    principal's grant does not list, fails the whole batch: that is not an item's fault; an
    item whose context misses the grant's constraints fails alone."""
    if not 1 <= len(items) <= MAX_BATCH:
        raise ValidationFailed(f"A batch holds 1 to {MAX_BATCH} items.", code="invalid_batch_size")
    encrypts, func = OPERATIONS[operation]
    loaded: LoadedServiceKey | None = None
    try:
        if principal is not None:
            grant = grant_of(principal)
            key_use_check(grant=grant, service_key=service_key)
            items = [_granted_item(grant, item) for item in items]
        loaded = load_service_key(service_key)
        valid = sum(1 for item in items if isinstance(item, dict))
        version = _take_uses(loaded, valid) if encrypts and valid else None
    except KcmError as exc:
        _count(loaded, operation, exc.code, len(items))
        raise
    results: list[dict[str, Any]] = []
    failed: dict[str, int] = {}  # by code; nothing is counted per item that succeeds
    for index, item in enumerate(items):
        try:
            if isinstance(item, KcmError):
                raise item
            result = func(loaded, version, item) if encrypts else func(loaded, item)
            results.append({"index": index, "ok": True, **result})
        except KcmError as exc:
            results.append(
                {"index": index, "ok": False, "error": {"code": exc.code, "detail": exc.detail}}
            )
            failed[exc.code] = failed.get(exc.code, 0) + 1
    if len(items) > sum(failed.values()):
        _count(loaded, operation, metrics.OK, len(items) - sum(failed.values()))
    for code, count in failed.items():
        _count(loaded, operation, code, count)
    return results
