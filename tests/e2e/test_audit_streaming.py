"""Audit streaming on a live stack: gunicorn and a prefork Celery worker (2 processes).

A tenant admin configures three sinks through the API: a webhook served by this test, a syslog
sink whose port refuses connections, and a webhook that accepts connections and never answers.
Data-key traffic goes in; the beat's task queues one delivery per sink in the worker. The
healthy webhook receives every event, signed, in order and verified against the chain, within a
bound that the other two sinks do not stretch; their errors are visible in the API.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from apps.audit import chain
from tests.audit.sinkkit import SECRET, SilentServer, WebhookReceiver, closed_port

from .stack import LiveStack
from .tenantkit import (
    KEY_ADMIN,
    KEY_USER,
    call,
    create_chain,
    poll,
    provision_tenant,
    service_path,
)

pytestmark = pytest.mark.e2e

ADMIN = "tenant_admin"
DATA_KEYS = 25
# Long enough that a healthy sink held up behind the hanging one would be plain to see, however
# slow the machine: its catch-up must come well before the hanging sink's timeout.
SINK_TIMEOUT = 15


def _stream_all(stack: LiveStack) -> None:
    """What the beat's `audit-stream` entry does: queue one delivery task per due sink."""
    code = "from apps.tenants.tasks import audit_stream_all; print(audit_stream_all())"
    assert stack.manage("shell", "-c", code).stdout.strip().splitlines()[-1] == "3"


def test_a_live_worker_streams_every_event_while_two_sinks_are_down() -> None:
    webhook, silent = WebhookReceiver(), SilentServer()
    env = {**os.environ, "KCM_AUDIT_SINK_TIMEOUT_SECONDS": str(SINK_TIMEOUT),
           "KCM_AUDIT_SINK_BATCH": "10"}  # fmt: skip
    try:
        with LiveStack(web_workers=1, celery_pool="prefork", env=env) as stack:
            tenant = provision_tenant(stack, "acme", (ADMIN, KEY_ADMIN, KEY_USER))
            sinks: list[dict[str, Any]] = [
                {"kind": "syslog", "host": "127.0.0.1", "port": closed_port(), "name": "dead"},
                {"kind": "webhook", "url": silent.url, "secret": SECRET, "name": "hangs"},
                {"kind": "webhook", "url": webhook.url, "secret": SECRET, "name": "healthy"},
            ]
            made = {}
            for body in sinks:
                reply = call(stack, tenant, ADMIN, "POST", "/api/v1/audit/sinks/", body)
                assert reply.status == 201, reply
                made[body["name"]] = reply.body
            create_chain(stack, tenant)
            for _ in range(DATA_KEYS):
                reply = call(stack, tenant, KEY_USER, "POST",
                             f"{service_path()}/generate-data-key/", {})  # fmt: skip
                assert reply.status == 200, reply
            events = call(stack, tenant, ADMIN, "GET", "/api/v1/audit/events/").body
            head = events["results"][0]["seq"]

            _stream_all(stack)
            started = time.monotonic()  # the three tasks are queued
            while not webhook.requests or webhook.verified_batches()[-1][-1]["seq"] < head:
                assert time.monotonic() - started < 30, "the healthy sink was not delivered"
                time.sleep(0.05)
            elapsed = time.monotonic() - started

            def sink(name: str) -> dict[str, Any]:
                path = f"/api/v1/audit/sinks/{made[name]['id']}/"
                return call(stack, tenant, ADMIN, "GET", path).body

            # The receiver notes a batch before it answers; the worker stores the cursor after
            # the answer, in its own commit: wait for that, and for the dead sink's failure.
            state = poll(
                lambda: {"healthy": sink("healthy"), "dead": sink("dead")},
                lambda s: s["healthy"]["cursor"] == head and s["dead"]["failures"] > 0,
                30,
            )
            state["hangs"] = poll(
                lambda: sink("hangs"), lambda s: bool(s["last_error"]), 3 * SINK_TIMEOUT
            )
    finally:
        webhook.close()
        silent.close()

    print(f"healthy sink caught up ({head} events) {elapsed:.2f} s after the round was queued")
    delivered: dict[int, dict[str, Any]] = {}
    for batch in webhook.verified_batches():
        assert [e["seq"] for e in batch] == list(range(batch[0]["seq"], batch[-1]["seq"] + 1))
        delivered.update({e["seq"]: e for e in batch})
    first = made["healthy"]["cursor"] + 1
    ordered = [delivered[seq] for seq in sorted(delivered)]
    assert [e["seq"] for e in ordered] == list(range(first, head + 1))
    count, _, problem = chain.verify_events(
        ordered, start_seq=first, start_hash=ordered[0]["prev_hash"]
    )
    assert problem is None and count == head - first + 1
    assert sum(e["action"] == "datakey.generate" for e in ordered) == DATA_KEYS
    assert state["healthy"]["cursor"] == head and state["healthy"]["failures"] == 0
    assert state["dead"]["failures"] == 1 and "Connection" in state["dead"]["last_error"]
    assert state["hangs"]["last_error"].startswith("webhook: ")
    assert "secret" not in state["healthy"]
    # Batches of 10: the healthy sink's catch-up is not held up by the hanging sink's timeout.
    assert elapsed < SINK_TIMEOUT, elapsed
