"""Recording, checkpointing and verifying audit events.

Every service that changes state or uses a key calls `audit_record`. Lifecycle events are
written in the caller's transaction (if the audit write fails, the change does not happen);
a cryptographic operation's event is committed before its response is sent. Never pass key
material or plaintext in `details`.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.audit import chain
from apps.audit.context import current
from apps.audit.models import AuditCheckpoint, AuditEvent, Outcome
from apps.audit.sealer import note_pending, seal_here
from apps.core.tenancy import current_schema
from apps.keystores.models import PlatformKey
from apps.keystores.platform import AUDIT_SIGNING, platform_key, platform_key_by_fingerprint
from apps.keystores.registry import platform_keystore

logger = logging.getLogger(__name__)

_MAX_DETAIL_BYTES = 4096


@lru_cache(maxsize=1024)  # the same few peers, on every request
def _ip(value: str) -> str | None:
    try:
        return ipaddress.ip_address(value).compressed if value else None
    except ValueError:
        return None


def _no_nul(value: Any) -> Any:
    # PostgreSQL text and jsonb cannot hold U+0000, which a client may send in a context.
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_no_nul(k): _no_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nul(v) for v in value]
    return value


def _details(details: dict[str, Any] | None) -> dict[str, Any]:
    # A JSON round trip gives exactly what jsonb will hand back when the chain is verified.
    text = json.dumps(details or {}, default=str)
    if len(text) > _MAX_DETAIL_BYTES:
        return {"truncated": True}
    clean: dict[str, Any] = json.loads(text)
    return _no_nul(clean) if "\\u0000" in text else clean


# The seal takes every column of the chained event from the body (audit migration 0003).
_PENDING_INSERT = "INSERT INTO audit_auditpending (body) VALUES (%s)"
_APPEND = "SELECT public.kcm_audit_append(%s)"


def _content(
    *,
    action: str,
    outcome: str,
    target: str,
    target_version: int | None,
    error_code: str,
    details: dict[str, Any] | None,
) -> dict[str, Any]:
    """The event's fields as the chain hashes them (the reference `event_body` must match)."""
    context = current()
    # Every string made safe for PostgreSQL: the sealer parses the body as jsonb.
    return {
        "occurred_at": chain.timestamp(timezone.now()),
        "actor": _no_nul(context.actor[:200]),
        "role": _no_nul(context.role[:100]),
        "source_ip": _ip(context.source_ip),
        "user_agent": _no_nul(context.user_agent[:300]),
        "request_id": _no_nul(context.request_id[:64]),
        "action": _no_nul(action),
        "target": _no_nul(str(target)[:200]),
        "target_version": target_version,
        "outcome": str(outcome),
        "error_code": _no_nul(error_code[:64]),
        "details": _details(details),
    }


def _plain(value: Any) -> bool:
    """Whether `value` comes back from a JSON round trip exactly as it is: strings, ints,
    booleans, None, and lists and string-keyed dicts of them (not floats: NaN)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if kind is list:
        return all(_plain(v) for v in value)
    return False


_json_str = json.encoder.encode_basestring  # one string as canonical() writes it (UTF-8 as is)


def event_body(
    *,
    action: str,
    outcome: str = Outcome.SUCCESS,
    target: str = "",
    target_version: int | None = None,
    error_code: str = "",
    details: dict[str, Any] | None = None,
) -> str:
    """The canonical body of one event, said by the current audit context's actor (what
    `audit_record` writes; the data plane writes the same body in its own statement).

    Every data-key request builds one, so the usual case is written out field by field, in
    canonical order: exactly `chain.canonical(_content(...))` (tests/audit/test_chain.py),
    at half its cost. Anything unusual (a NUL, a float, a large or odd `details`) takes
    the reference path."""
    details = details or {}
    if _plain(details) and type(target_version) in (int, type(None)):
        detail_text = chain.canonical_value(details)
        # Short enough that _details' own measure (ASCII-escaped, with spaces: at most 12
        # characters per character) cannot reach the limit either.
        if len(detail_text) * 12 <= _MAX_DETAIL_BYTES:
            context = current()
            ip = _ip(context.source_ip)
            body = (
                f'{{"action":{_json_str(action)},"actor":{_json_str(context.actor[:200])},'
                f'"details":{detail_text},"error_code":{_json_str(error_code[:64])},'
                f'"occurred_at":"{chain.timestamp(timezone.now())}",'
                f'"outcome":{_json_str(str(outcome))},'
                f'"request_id":{_json_str(context.request_id[:64])},'
                f'"role":{_json_str(context.role[:100])},'
                f'"source_ip":{"null" if ip is None else _json_str(ip)},'
                f'"target":{_json_str(str(target)[:200])},'
                f'"target_version":{"null" if target_version is None else int(target_version)},'
                f'"user_agent":{_json_str(context.user_agent[:300])}}}'
            )
            if "\\u0000" not in body:  # a NUL anywhere: the reference path replaces it
                return body
    content = _content(
        action=action,
        outcome=outcome,
        target=target,
        target_version=target_version,
        error_code=error_code,
        details=details,
    )
    return chain.canonical(content)


def audit_record(
    *,
    action: str,
    outcome: str = Outcome.SUCCESS,
    target: str = "",
    target_version: int | None = None,
    error_code: str = "",
    details: dict[str, Any] | None = None,
    chained: bool = True,
) -> None:
    """Record one event in the current schema's audit log (the tenant's, or the platform's in
    the public schema). `action` is a stable dotted name such as ``key.rotate``; `outcome` is
    ``success``, ``denied`` or ``error`` (with `error_code`).

    `chained` (lifecycle changes): chained at once, in the caller's transaction. Otherwise (hot
    paths): committed as pending without taking the chain's lock, and chained within about
    KCM_AUDIT_SEAL_SECONDS by this process's sealer (or anyone's next seal)."""
    if not settings.KCM_AUDIT_ENABLED:
        return
    body = event_body(
        action=action,
        outcome=outcome,
        target=target,
        target_version=target_version,
        error_code=error_code,
        details=details,
    )
    with connection.cursor() as cursor:
        cursor.execute(_APPEND if chained else _PENDING_INSERT, [body])
    if not chained:
        note_pending(current_schema())


def as_chain_dict(event: dict[str, Any]) -> dict[str, Any]:
    """An AuditEvent `.values()` row in the form the chain hashes."""
    return {
        **event,
        "occurred_at": chain.timestamp(event["occurred_at"]),
        "source_ip": event["source_ip"] or None,
    }


def events_in_order(start_seq: int = 1) -> Iterator[dict[str, Any]]:
    """Chained events from `start_seq` on (callers seal pending events first)."""
    fields = ["seq", "prev_hash", "hash", *chain.FIELDS]
    rows = AuditEvent.objects.filter(seq__gte=start_seq).order_by("seq").values(*fields)
    for row in rows.iterator(chunk_size=5000):
        yield as_chain_dict(row)


# --- checkpoints (signed by the platform's HSM-held key) --------------------------------


def signing_key() -> PlatformKey:
    """The platform's audit signing key (created at deploy, see `apps.keystores.platform`)."""
    return platform_key(AUDIT_SIGNING)


def checkpoint_message(schema: str, seq: int, event_hash: str) -> bytes:
    return f"kcm-audit-checkpoint:v1|{schema}|{seq}|{event_hash}".encode()


def checkpoint_create(
    *, at: Mapping[str, Any] | None = None, anchor: bool = False
) -> AuditCheckpoint | None:
    """Sign this schema's chain at event `at` (its "seq" and "hash"), by default its current
    head (None if the log is empty). `anchor`: the chain verifies onwards from here once the
    events before it are pruned."""
    head = at or AuditEvent.objects.order_by("-seq").values("seq", "hash").first()
    if head is None:
        return None
    key = signing_key()
    signature = platform_keystore().sign(
        key.handle, checkpoint_message(current_schema(), head["seq"], head["hash"])
    )
    return AuditCheckpoint.objects.create(
        seq=head["seq"],
        hash=head["hash"],
        signed_at=timezone.now(),
        signature=base64.b64encode(signature).decode(),
        key_fingerprint=key.fingerprint,
        is_anchor=anchor,
    )


def checkpoint_valid(checkpoint: AuditCheckpoint, schema: str) -> bool:
    key = platform_key_by_fingerprint(checkpoint.key_fingerprint)
    if key is None:
        return False
    public = load_der_public_key(bytes(key.public_key_der))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    try:
        public.verify(
            base64.b64decode(checkpoint.signature),
            checkpoint_message(schema, checkpoint.seq, checkpoint.hash),
            ec.ECDSA(hashes.SHA256()),
        )
    except (InvalidSignature, ValueError):
        return False
    return True


# --- verification ---------------------------------------------------------------------


def audit_verify() -> dict[str, Any]:
    """Verify this schema's chain and its checkpoints; report the first bad event."""
    schema = current_schema()
    seal_here()
    checkpoints = list(AuditCheckpoint.objects.order_by("seq"))
    for checkpoint in checkpoints:
        if not checkpoint_valid(checkpoint, schema):
            return _report(0, {"seq": checkpoint.seq, "reason": "checkpoint signature is invalid"})
    anchor = next((c for c in reversed(checkpoints) if c.is_anchor), None)
    start_seq, start_hash = (anchor.seq + 1, anchor.hash) if anchor else (1, chain.GENESIS)
    count, last_hash, problem = chain.verify_events(
        events_in_order(start_seq), start_seq=start_seq, start_hash=start_hash
    )
    if problem is not None:
        return _report(count, problem.as_dict())
    head_seq = start_seq + count - 1
    by_seq = dict(
        AuditEvent.objects.filter(seq__in=[c.seq for c in checkpoints]).values_list("seq", "hash")
    )
    for checkpoint in checkpoints:
        if checkpoint.seq > head_seq:
            return _report(
                count,
                {
                    "seq": head_seq + 1,
                    "reason": f"the log ends at {head_seq} but a checkpoint signed event "
                    f"{checkpoint.seq}: events were removed from the end",
                },
            )
        if checkpoint.seq >= start_seq and by_seq.get(checkpoint.seq) != checkpoint.hash:
            return _report(
                count,
                {"seq": checkpoint.seq, "reason": "differs from its signed checkpoint (rewritten)"},
            )
    return _report(count, None, last_hash=last_hash, checkpoints=len(checkpoints))


def _report(count: int, problem: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    return {"ok": problem is None, "checked": count, "first_bad": problem, **extra}


def audit_checkpoint_here() -> bool:
    """Sign the head of this schema's chain if it moved since its last checkpoint (beat runs
    it in every live schema: apps.tenants.tasks)."""
    with transaction.atomic():
        seal_here()
        head = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
        last = AuditCheckpoint.objects.order_by("-seq").values_list("seq", flat=True).first()
        return head is not None and head != last and checkpoint_create() is not None
