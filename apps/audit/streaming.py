"""Streaming sealed events to a tenant's sinks: at least once, in order, from a stored cursor.

`sink_deliver` sends one sink's events with seq > cursor in batches. Each batch runs in one
transaction that holds the sink's row (`FOR UPDATE SKIP LOCKED`: a second worker skips a sink
being delivered instead of sending the same events twice at once, and a row lock, unlike a
session advisory lock, works through a transaction-pooling PgBouncer). The cursor moves in that
transaction only after the sink accepted the batch: a crash at any point rolls it back, and
the next round sends that batch again (a receiver deduplicates by seq).

A failure records the error and pushes the sink's next attempt back exponentially (up to
KCM_AUDIT_SINK_MAX_BACKOFF_SECONDS); every network step has a timeout of
KCM_AUDIT_SINK_TIMEOUT_SECONDS, and each sink is delivered by its own task, so a sink that is
down delays no other sink or tenant.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import socket
import ssl
import time
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from apps.audit import chain
from apps.audit.models import AuditEvent, AuditSink, SinkKind
from apps.audit.sealer import seal_here
from apps.audit.services import as_chain_dict
from apps.audit.sinks import host_allowed, secret_open
from apps.core import metrics

logger = logging.getLogger(__name__)

_FIELDS = ["seq", "prev_hash", "hash", *chain.FIELDS]
# RFC 5424 facility 13 ("log audit"); severity informational, or warning for a refusal/error.
_FACILITY = 13
_SD_ID = "kcm@32473"  # 32473: the private enterprise number reserved for documentation
# How long one task delivers one sink before it yields to the next round (and other sinks).
BUDGET_SECONDS = 20.0


class SinkFailed(Exception):
    """The sink did not accept a batch (the message names no secret)."""


def event_payload(event: dict[str, Any], tenant: str) -> dict[str, Any]:
    """One event as sinks receive it: the chained fields (verifiable with docs/audit.md)."""
    return {"tenant": tenant, **event}


# --- formats -----------------------------------------------------------------------------


def _sd_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog_frame(payload: dict[str, Any], hostname: str) -> bytes:
    """One RFC 5424 message with octet-counting framing (RFC 6587 section 3.4.1)."""
    severity = 6 if payload["outcome"] == "success" else 4
    msgid = "".join(c for c in payload["action"] if 33 <= ord(c) <= 126)[:32] or "-"
    sd = (
        f'[{_SD_ID} tenant="{_sd_value(payload["tenant"])}" seq="{payload["seq"]}" '
        f'hash="{payload["hash"]}"]'
    )
    header = (
        f"<{_FACILITY * 8 + severity}>1 {payload['occurred_at']} {hostname} kcm - {msgid} {sd} "
    )
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    message = header.encode() + b"\xef\xbb\xbf" + text.encode()
    return str(len(message)).encode() + b" " + message


def webhook_request(
    payloads: list[dict[str, Any]], secret: bytes, delivery: str
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one webhook POST. The signature covers `timestamp.body`."""
    body = json.dumps(payloads, separators=(",", ":"), ensure_ascii=False).encode()
    stamp = str(int(time.time()))
    mac = hmac.new(secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return body, {
        "Content-Type": "application/json",
        "X-KCM-Delivery": delivery,
        "X-KCM-Timestamp": stamp,
        "X-KCM-Signature": f"sha256={mac}",
    }


# --- transports --------------------------------------------------------------------------


def _send_webhook(sink: AuditSink, payloads: list[dict[str, Any]]) -> None:
    # http.client rather than a client library that logs each request's URL (a URL's query
    # may carry the receiver's token); every socket step is bounded by the timeout.
    body, headers = webhook_request(payloads, secret_open(sink), str(uuid.uuid4()))
    timeout = settings.KCM_AUDIT_SINK_TIMEOUT_SECONDS
    parts = urlsplit(sink.url)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context()
        conn = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout, context=context
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("POST", target, body=body, headers=headers)
        response = conn.getresponse()
        response.read(65536)
    except (OSError, http.client.HTTPException) as exc:
        raise SinkFailed(f"webhook: {type(exc).__name__}") from None
    finally:
        conn.close()
    if not 200 <= response.status < 300:
        raise SinkFailed(f"webhook: HTTP {response.status}")


def _send_syslog(sink: AuditSink, payloads: list[dict[str, Any]]) -> None:
    timeout = settings.KCM_AUDIT_SINK_TIMEOUT_SECONDS
    hostname = socket.gethostname()[:255] or "-"
    data = b"".join(syslog_frame(p, hostname) for p in payloads)
    try:
        with socket.create_connection((sink.host, int(sink.port or 0)), timeout=timeout) as raw:
            stream: socket.socket = raw
            if sink.tls:
                context = ssl.create_default_context(cadata=sink.ca_pem or None)
                stream = context.wrap_socket(raw, server_hostname=sink.host)
            stream.settimeout(timeout)
            stream.sendall(data)
            # Syslog over TCP has no acknowledgement (RFC 6587): success means the receiver's
            # host took every byte. An orderly close flushes them; a receiver that closes
            # without TLS close_notify has still read them, so that is not a failure.
            try:
                if isinstance(stream, ssl.SSLSocket):
                    stream.unwrap()
                else:
                    stream.shutdown(socket.SHUT_WR)
            except (OSError, ssl.SSLError):
                pass
    except (OSError, ssl.SSLError) as exc:
        raise SinkFailed(f"syslog: {type(exc).__name__}: {exc.strerror or ''}"[:300]) from None


def _send(sink: AuditSink, payloads: list[dict[str, Any]]) -> None:
    host = (urlsplit(sink.url).hostname or "") if sink.kind == SinkKind.WEBHOOK else sink.host
    if not host_allowed(host):  # the platform narrowed the list since the sink was made
        raise SinkFailed("the platform no longer allows this host (KCM_AUDIT_SINK_ALLOWED_HOSTS)")
    if sink.kind == SinkKind.WEBHOOK:
        _send_webhook(sink, payloads)
    else:
        _send_syslog(sink, payloads)


# --- delivery ----------------------------------------------------------------------------


def _backoff(failures: int) -> timedelta:
    seconds = min(settings.KCM_AUDIT_SINK_MAX_BACKOFF_SECONDS, 2 ** min(failures, 20))
    return timedelta(seconds=seconds)


def _batch(sink_id: Any, tenant: str) -> str:
    """Deliver one batch of `sink_id`: "sent", "idle" (caught up), "busy" (another worker holds
    it), "failed" or "gone"."""
    with transaction.atomic():
        sink = AuditSink.objects.select_for_update(skip_locked=True).filter(pk=sink_id).first()
        if sink is None:
            return "busy" if AuditSink.objects.filter(pk=sink_id).exists() else "gone"
        rows = AuditEvent.objects.filter(seq__gt=sink.cursor).order_by("seq").values(*_FIELDS)
        events = [as_chain_dict(row) for row in rows[: settings.KCM_AUDIT_SINK_BATCH]]
        # Events pruned by retention before a sink took them are in the archive, not here:
        # the receiver then sees a jump in seq (and the chain's anchor explains it).
        if not events:
            return "idle"
        now = timezone.now()
        sink.last_attempt_at = now
        try:
            _send(sink, [event_payload(e, tenant) for e in events])
        except Exception as exc:  # the HSM, the network or the receiver: retried later
            reason = str(exc) if isinstance(exc, SinkFailed) else type(exc).__name__
            sink.failures += 1
            sink.last_error = reason[:300]
            sink.next_attempt_at = now + _backoff(sink.failures)
            sink.save(update_fields=["failures", "last_error", "last_attempt_at",
                                     "next_attempt_at"])  # fmt: skip
            logger.warning("audit sink %s failed: %s", sink.pk, sink.last_error)
            return "failed"
        sink.cursor = events[-1]["seq"]
        sink.failures = 0
        sink.last_error = ""
        sink.last_delivered_at = now
        sink.next_attempt_at = now
        sink.save(update_fields=["cursor", "failures", "last_error", "last_attempt_at",
                                 "last_delivered_at", "next_attempt_at"])  # fmt: skip
    metrics.AUDIT_STREAM_DELIVERED.labels(tenant, str(sink_id)).inc(len(events))
    return "sent"


def sink_deliver(sink_id: Any, *, tenant: str, budget_seconds: float | None = None) -> str:
    """Deliver `sink_id` of the current schema, whose tenant's slug is `tenant` (named in each
    event and metric), until caught up, failed or out of time; the last batch's outcome."""
    deadline = time.monotonic() + (BUDGET_SECONDS if budget_seconds is None else budget_seconds)
    seal_here()
    outcome = "idle"
    while True:
        outcome = _batch(sink_id, tenant)
        if outcome != "sent" or time.monotonic() >= deadline:
            break
    _record_lag(sink_id, tenant)
    return outcome


def _record_lag(sink_id: Any, tenant: str) -> None:
    cursor = AuditSink.objects.filter(pk=sink_id).values_list("cursor", flat=True).first()
    if cursor is None:
        return
    head = AuditEvent.objects.aggregate(head=Max("seq"))["head"] or 0
    metrics.AUDIT_STREAM_LAG.labels(tenant, str(sink_id)).set(max(0, head - cursor))


def sinks_due() -> list[str]:
    """This schema's sinks whose next attempt is due (a failing sink waits out its backoff)."""
    due = AuditSink.objects.filter(next_attempt_at__lte=timezone.now())
    return [str(pk) for pk in due.values_list("pk", flat=True)]
