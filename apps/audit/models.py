"""The audit log: one hash-chained, append-only table per schema.

In a tenant's schema it records what happened in that tenant; in the public schema it is the
platform log (actions on tenants). Each event's hash covers its content and its predecessor's
hash; HSM-signed checkpoints pin the chain so that truncation and wholesale rewriting show.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone


class Outcome(models.TextChoices):
    SUCCESS = "success"
    DENIED = "denied"
    ERROR = "error"


class EventFields(models.Model):
    """What an event says; the chain's hash covers these (see apps.audit.chain.FIELDS)."""

    occurred_at = models.DateTimeField()
    actor = models.CharField(max_length=200)
    role = models.CharField(max_length=100, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=200, blank=True)
    target_version = models.IntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    error_code = models.CharField(max_length=64, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        abstract = True


class AuditEvent(EventFields):
    # Position in the chain: 1, 2, 3, ... with no gaps. Few indexes on purpose: every one is
    # paid for on each write, and writes outnumber searches by far.
    seq = models.BigIntegerField(primary_key=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-seq"]
        indexes = [
            models.Index(fields=["occurred_at"], name="audit_event_time"),
            models.Index(fields=["action"], name="audit_event_action"),
            models.Index(fields=["target"], name="audit_event_target"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.outcome}"


class AuditPending(models.Model):
    """An event committed by a hot path (a cryptographic operation, a refused request) and not
    yet chained: durable at once, chained by `kcm_audit_seal()` within a second or so, which
    takes every column of the chained event from `body`. Taking the chain's lock on every
    data-key request would serialise them all on one commit."""

    id = models.BigAutoField(primary_key=True)
    body = models.TextField()  # the canonical JSON of the event (apps.audit.chain.canonical)

    def __str__(self) -> str:
        return f"pending {self.id}"


class AuditCheckpoint(models.Model):
    """A signature, by the platform's HSM-held audit key, over (schema, seq, hash)."""

    seq = models.BigIntegerField()
    hash = models.CharField(max_length=64)
    signed_at = models.DateTimeField()
    signature = models.TextField()  # base64 DER ECDSA-P256-SHA256
    key_fingerprint = models.CharField(max_length=64)
    # An anchor starts the verifiable chain after events before it were archived and pruned.
    is_anchor = models.BooleanField(default=False)

    class Meta:
        ordering = ["-seq"]

    def __str__(self) -> str:
        return f"checkpoint #{self.seq}"


class ExportState(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class AuditExport(models.Model):
    """An export of a filtered range, written by a worker with progress, then downloaded
    together with its signed manifest."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    requested_by = models.CharField(max_length=200)
    filters = models.JSONField(default=dict)
    format = models.CharField(max_length=8)  # csv | jsonl
    state = models.CharField(max_length=12, choices=ExportState.choices, default=ExportState.QUEUED)
    total = models.BigIntegerField(default=0)
    done = models.BigIntegerField(default=0)
    file_name = models.CharField(max_length=300, blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    error = models.CharField(max_length=500, blank=True)
    # Stable code of a failure (`export_disk_full`, `export_failed`); "" otherwise.
    error_code = models.CharField(max_length=40, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"export {self.id} ({self.state})"


class SinkKind(models.TextChoices):
    SYSLOG = "syslog"
    WEBHOOK = "webhook"


class AuditSink(models.Model):
    """Where this tenant's events are streamed as they are sealed (apps.audit.streaming):
    a syslog receiver (RFC 5424, octet counting, TCP or TLS) or an HTTPS webhook signed with
    HMAC-SHA256. `cursor` is the last seq delivered: it moves only after the sink accepted
    every event up to it, so delivery is at least once and in order."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=8, choices=SinkKind.choices)
    name = models.CharField(max_length=100, blank=True)
    host = models.CharField(max_length=255, blank=True)  # syslog
    port = models.IntegerField(null=True, blank=True)  # syslog
    tls = models.BooleanField(default=False)  # syslog
    ca_pem = models.TextField(blank=True)  # syslog over TLS: trust this CA instead of the system's
    url = models.CharField(max_length=2000, blank=True)  # webhook
    # The webhook's HMAC secret, sealed under the platform's credentials key (never returned).
    secret_sealed = models.BinaryField(null=True, blank=True)
    cursor = models.BigIntegerField(default=0)
    failures = models.IntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_delivered_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.kind} sink {self.id}"
