"""Streaming a tenant's sealed events to real receivers: a webhook server and a TCP syslog
server started here. Every event arrives, in order, signed, and verifies against the chain;
a sink that is down (refusing or hanging) delays no other sink."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.audit import chain
from apps.audit.context import AuditContext, reset_context, set_context
from apps.audit.models import AuditSink
from apps.audit.services import audit_record
from apps.audit.streaming import sink_deliver, sinks_due
from apps.core import metrics
from apps.core.roles import Role
from tests.audit.sinkkit import (
    SECRET,
    SilentServer,
    SyslogReceiver,
    WebhookReceiver,
    closed_port,
)
from tests.keychain.kmip_server import make_pki


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def syslog() -> Iterator[SyslogReceiver]:
    receiver = SyslogReceiver()
    yield receiver
    receiver.close()


def _create(api: Any, body: dict[str, Any]) -> dict[str, Any]:
    response = api("acme", Role.TENANT_ADMIN).post("/api/v1/audit/sinks/", body)
    assert response.status_code == 201, response.content
    result: dict[str, Any] = response.json_body
    return result


def _events(count: int) -> None:
    token = set_context(AuditContext(actor="system:stream-test"))
    try:
        with schema_context("t_acme"):
            for index in range(count):
                audit_record(action="test.stream", target=f"item:{index}", details={"i": index})
    finally:
        reset_context(token)


def _deliver(sink_id: str) -> str:
    with schema_context("t_acme"):
        return sink_deliver(sink_id, tenant="acme")


def _sink(sink_id: str) -> AuditSink:
    with schema_context("t_acme"):
        return AuditSink.objects.get(pk=sink_id)


def _assert_chained(events: list[dict[str, Any]], first_seq: int) -> None:
    """Contiguous from first_seq, in order, and each event verifies against the chain."""
    assert [e["seq"] for e in events] == list(range(first_seq, first_seq + len(events)))
    count, _, problem = chain.verify_events(
        events, start_seq=first_seq, start_hash=events[0]["prev_hash"]
    )
    assert problem is None and count == len(events)
    assert all(e["tenant"] == "acme" for e in events)


def _wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@override_settings(KCM_AUDIT_SINK_BATCH=7)
def test_webhook_receives_every_event_in_signed_ordered_batches(
    world: Any, api: Any, webhook: WebhookReceiver
) -> None:
    sink = _create(api, {"kind": "webhook", "url": webhook.url, "secret": SECRET})
    start = sink["cursor"]
    _events(20)
    assert _deliver(sink["id"]) == "idle"
    batches = webhook.verified_batches()
    assert [len(b) for b in batches][:3] == [7, 7, 7]  # the sink's own create event is first
    delivered = [event for batch in batches for event in batch]
    _assert_chained(delivered, start + 1)
    assert [e["action"] for e in delivered][-20:] == ["test.stream"] * 20
    state = _sink(sink["id"])
    assert state.cursor == delivered[-1]["seq"] and state.failures == 0
    labels = {"tenant": "acme", "sink_id": sink["id"]}
    assert metrics.REGISTRY.get_sample_value("kcm_audit_stream_lag_events", labels) == 0
    delivered_total = metrics.REGISTRY.get_sample_value("kcm_audit_stream_delivered_total", labels)
    assert delivered_total == len(delivered) == 21
    # Nothing new: nothing is sent again.
    assert _deliver(sink["id"]) == "idle" and len(webhook.requests) == len(batches)


def test_syslog_receives_rfc5424_octet_counted_messages(
    world: Any, api: Any, syslog: SyslogReceiver
) -> None:
    sink = _create(api, {"kind": "syslog", "host": "127.0.0.1", "port": syslog.port})
    _events(5)
    _deliver(sink["id"])
    _wait_for(lambda: len(syslog.messages) >= 6)
    events = [m["event"] for m in syslog.messages]
    _assert_chained(events, sink["cursor"] + 1)
    last = syslog.messages[-1]
    assert last["pri"] == 13 * 8 + 6 and last["msgid"] == "test.stream"
    assert f'seq="{events[-1]["seq"]}"' in last["sd"] and 'tenant="acme"' in last["sd"]


def test_a_failing_webhook_keeps_its_cursor_records_the_error_and_backs_off(
    world: Any, api: Any, webhook: WebhookReceiver
) -> None:
    sink = _create(api, {"kind": "webhook", "url": webhook.url, "secret": SECRET})
    _events(3)
    webhook.status = 503
    assert _deliver(sink["id"]) == "failed"
    state = _sink(sink["id"])
    assert state.cursor == sink["cursor"] and state.failures == 1
    assert state.last_error == "webhook: HTTP 503" and state.next_attempt_at > timezone.now()
    shown = api("acme", Role.AUDITOR).get(f"/api/v1/audit/sinks/{sink['id']}/").json_body
    assert shown["last_error"] == "webhook: HTTP 503" and shown["next_attempt_at"]
    with schema_context("t_acme"):
        assert sink["id"] not in sinks_due()  # waits out its backoff
    # The receiver is back: the same events again, from the cursor, and the cursor moves.
    webhook.status = 200
    assert _deliver(sink["id"]) == "idle"
    retried = webhook.verified_batches()[-1]
    _assert_chained(retried, sink["cursor"] + 1)
    assert webhook.verified_batches()[0] == retried  # at least once: the failed batch again
    assert _sink(sink["id"]).failures == 0


@override_settings(KCM_AUDIT_SINK_TIMEOUT_SECONDS=1)
def test_a_dead_or_hanging_sink_does_not_delay_a_healthy_one(
    world: Any, api: Any, webhook: WebhookReceiver
) -> None:
    silent = SilentServer()
    try:
        refused = _create(
            api, {"kind": "syslog", "host": "127.0.0.1", "port": closed_port(), "name": "dead"}
        )
        hanging = _create(
            api, {"kind": "webhook", "url": silent.url, "secret": SECRET, "name": "hangs"}
        )
        healthy = _create(api, {"kind": "webhook", "url": webhook.url, "secret": SECRET})
        _events(10)
        timings = {}
        for sink in (refused, hanging, healthy):
            started = time.monotonic()
            timings[sink["name"] or "healthy"] = (_deliver(sink["id"]), time.monotonic() - started)
    finally:
        silent.close()
    assert timings["dead"][0] == "failed" and timings["dead"][1] < 1.0
    print({name: f"{outcome} in {seconds:.3f} s" for name, (outcome, seconds) in timings.items()})
    assert timings["hangs"][0] == "failed" and timings["hangs"][1] < 2.0  # the 1 s timeout
    assert timings["healthy"][0] == "idle"
    assert [e["action"] for b in webhook.verified_batches() for e in b][-10:] == [
        "test.stream"
    ] * 10
    assert "Connection" in _sink(refused["id"]).last_error
    assert _sink(hanging["id"]).last_error.startswith("webhook: ")
    # The next round skips both until their backoff ends, so it costs nothing.
    with schema_context("t_acme"):
        assert sinks_due() == [healthy["id"]]


def test_syslog_over_tls_trusts_the_given_ca_and_refuses_an_unknown_one(
    world: Any, api: Any, tmp_path: Any
) -> None:
    pki, other = make_pki(), make_pki()
    (tmp_path / "cert.pem").write_text(pki.server_cert_pem)
    (tmp_path / "key.pem").write_text(pki.server_key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    receiver = SyslogReceiver(tls=context)
    try:
        body = {"kind": "syslog", "host": "127.0.0.1", "port": receiver.port, "tls": True}
        trusted = _create(api, {**body, "ca_pem": pki.ca_pem})
        stranger = _create(api, {**body, "ca_pem": other.ca_pem})
        _events(3)
        assert _deliver(trusted["id"]) == "idle"
        _wait_for(lambda: len(receiver.messages) >= 5)  # two create events, three of the test's
        _assert_chained([m["event"] for m in receiver.messages], trusted["cursor"] + 1)
        assert _deliver(stranger["id"]) == "failed"
        assert "SSL" in _sink(stranger["id"]).last_error
    finally:
        receiver.close()


def test_a_syslog_receiver_killed_and_restarted_mid_stream_misses_nothing(
    world: Any, api: Any
) -> None:
    first = SyslogReceiver()
    sink = _create(api, {"kind": "syslog", "host": "127.0.0.1", "port": first.port})
    _events(4)
    _deliver(sink["id"])
    _wait_for(lambda: len(first.messages) >= 5)
    first.close()  # the receiver dies
    _events(4)
    assert _deliver(sink["id"]) == "failed"
    second = SyslogReceiver(port=first.port)  # and comes back on its port
    try:
        with schema_context("t_acme"):
            AuditSink.objects.filter(pk=sink["id"]).update(next_attempt_at=timezone.now())
        assert _deliver(sink["id"]) == "idle"
        _wait_for(lambda: len(second.messages) >= 4)
        events = [m["event"] for m in first.messages + second.messages]
        _assert_chained(events, sink["cursor"] + 1)
        assert len(events) == 9
    finally:
        second.close()


def test_an_https_webhook_is_verified_against_the_trusted_cas(
    world: Any, api: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    pki, stranger = make_pki(), make_pki()
    (tmp_path / "cert.pem").write_text(pki.server_cert_pem)
    (tmp_path / "key.pem").write_text(pki.server_key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    receiver = WebhookReceiver(tls=context)
    try:
        sink = _create(api, {"kind": "webhook", "url": receiver.url, "secret": SECRET})
        _events(2)
        # The system's trust store, as OpenSSL reads it: first without our CA, then with it.
        (tmp_path / "stranger.pem").write_text(stranger.ca_pem)
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "stranger.pem"))
        assert _deliver(sink["id"]) == "failed"
        assert "SSL" in _sink(sink["id"]).last_error and receiver.requests == []
        (tmp_path / "ca.pem").write_text(pki.ca_pem)
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
        with schema_context("t_acme"):
            AuditSink.objects.filter(pk=sink["id"]).update(next_attempt_at=timezone.now())
        assert _deliver(sink["id"]) == "idle"
        _assert_chained(receiver.verified_batches()[0], sink["cursor"] + 1)
    finally:
        receiver.close()
