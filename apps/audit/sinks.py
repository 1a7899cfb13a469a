"""Audit sinks: where a tenant's sealed events are streamed (apps.audit.streaming delivers).

A webhook's HMAC secret is sealed with AES-256-GCM under the platform's credentials key (the
one that seals HYOK credentials, see `apps.keystores.platform`), with associated data naming
the schema and the sink: a sealed secret copied to another tenant or sink does not open. It is
never returned, logged or audited.
"""

from __future__ import annotations

import fnmatch
import ssl
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, QuerySet

from apps.audit.models import AuditEvent, AuditSink, SinkKind
from apps.audit.sealer import seal_here
from apps.audit.services import audit_record
from apps.core.errors import NotFound, ServiceUnavailable, ValidationFailed
from apps.keystores.base import KeystoreError
from apps.keystores.platform import HYOK_CREDENTIALS, platform_key
from apps.keystores.registry import platform_keystore

MAX_SINKS = 10
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _secret_aad(schema: str, sink_id: Any) -> bytes:
    return f"kcm:audit-sink-secret:v1|schema={schema}|sink={sink_id}".encode()


def _schema() -> str:
    return str(connection.schema_name)  # type: ignore[attr-defined]


def secret_seal(sink_id: Any, secret: str) -> bytes:
    try:
        return platform_keystore().encrypt(
            platform_key(HYOK_CREDENTIALS).handle, secret.encode(), _secret_aad(_schema(), sink_id)
        )
    except KeystoreError as exc:
        raise ServiceUnavailable(
            f"The HSM cannot seal the sink's secret ({exc.code}).", code="hsm_unavailable"
        ) from None


def secret_open(sink: AuditSink) -> bytes:
    """The webhook's HMAC key, in memory only (raises KeystoreError if the HSM fails)."""
    return platform_keystore().decrypt(
        platform_key(HYOK_CREDENTIALS).handle,
        bytes(sink.secret_sealed or b""),
        _secret_aad(_schema(), sink.pk),
    )


def _invalid(detail: str) -> ValidationFailed:
    return ValidationFailed(detail, code="invalid_sink")


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host or parts.username or parts.password:
        raise _invalid("url must be an https:// URL with a host and no credentials.")
    if parts.scheme == "https":
        return
    loopback_allowed = settings.KCM_ENV in ("development", "test") and host in _LOOPBACK_NAMES
    if parts.scheme == "http" and loopback_allowed:
        return
    raise _invalid("url must use https (http only to localhost in development and test).")


def _check_syslog(host: str, port: int | None, ca_pem: str) -> None:
    if not host or any(c in host for c in "/ @") or port is None or not 0 < port < 65536:
        raise _invalid("A syslog sink needs a host and a port (1-65535).")
    if ca_pem:
        try:
            ssl.create_default_context(cadata=ca_pem)
        except (ssl.SSLError, ValueError):
            raise _invalid("ca_pem is not a PEM CA certificate bundle.") from None


def host_allowed(host: str) -> bool:
    """Whether the platform lets a sink connect to `host` (KCM_AUDIT_SINK_ALLOWED_HOSTS). A
    sink makes KCM connect where a tenant says: anywhere, and it would probe (and POST to) the
    platform's own network."""
    patterns = settings.KCM_AUDIT_SINK_ALLOWED_HOSTS
    return any(fnmatch.fnmatchcase(host.lower(), p.lower()) for p in patterns)


def _check_allowed(host: str) -> None:
    if not host_allowed(host):
        raise ValidationFailed(
            f"The platform does not allow audit sinks at {host!r} (KCM_AUDIT_SINK_ALLOWED_HOSTS).",
            code="sink_host_not_allowed",
        )


def sink_create(*, data: dict[str, Any], actor: str) -> AuditSink:
    """Create a sink that starts after the current head of the log (or at its start with
    `from_start`); records `audit.sink.create` in the same transaction."""
    kind = data["kind"]
    sink = AuditSink(kind=kind, name=data.get("name", ""), created_by=actor)
    if kind == SinkKind.WEBHOOK:
        url, secret = data.get("url", ""), data.get("secret", "")
        _check_url(url)
        if len(secret) < 32:
            raise _invalid("A webhook sink needs a secret of at least 32 characters.")
        _check_allowed(urlsplit(url).hostname or "")
        sink.url = url
        sink.secret_sealed = secret_seal(sink.pk, secret)
    else:
        host, port, ca_pem = data.get("host", ""), data.get("port"), data.get("ca_pem", "")
        _check_syslog(host, port, ca_pem)
        _check_allowed(host)
        sink.host, sink.port, sink.tls, sink.ca_pem = host, port, data.get("tls", False), ca_pem
        if ca_pem and not sink.tls:
            raise _invalid("ca_pem needs tls.")
    with transaction.atomic():
        if AuditSink.objects.count() >= MAX_SINKS:
            raise _invalid(f"A tenant has at most {MAX_SINKS} sinks.")
        if not data.get("from_start"):
            seal_here()
            sink.cursor = AuditEvent.objects.aggregate(head=Max("seq"))["head"] or 0
        sink.save()
        details = {"kind": kind, "destination": sink_destination(sink)}
        audit_record(action="audit.sink.create", target=f"audit_sink:{sink.pk}", details=details)
    return sink


def sink_destination(sink: AuditSink) -> str:
    """Where a sink sends, without anything secret (a URL's query may carry a token)."""
    if sink.kind == SinkKind.WEBHOOK:
        parts = urlsplit(sink.url)
        return f"{parts.scheme}://{parts.netloc}{parts.path}"
    return f"{'tls' if sink.tls else 'tcp'}://{sink.host}:{sink.port}"


def sink_list() -> QuerySet[AuditSink]:
    return AuditSink.objects.all()


def sink_get(sink_id: Any) -> AuditSink:
    sink = AuditSink.objects.filter(pk=sink_id).first()
    if sink is None:
        raise NotFound("No such audit sink.", code="audit_sink_not_found")
    return sink


def sink_delete(*, sink_id: Any) -> None:
    with transaction.atomic():
        # Waits for a delivery in progress (it holds the row) rather than racing it.
        sink = AuditSink.objects.select_for_update().filter(pk=sink_id).first()
        if sink is None:
            raise NotFound("No such audit sink.", code="audit_sink_not_found")
        details = {"kind": sink.kind, "destination": sink_destination(sink)}
        audit_record(action="audit.sink.delete", target=f"audit_sink:{sink.pk}", details=details)
        sink.delete()
