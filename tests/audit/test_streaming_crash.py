"""At least once across a crash: a delivering process is SIGKILLed while the webhook holds a
batch; a new process resumes from the stored cursor; the receiver has every event, in order,
with no gap, verified against the chain (the batch in flight arrives twice)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection
from django_tenants.utils import schema_context

from apps.audit import chain
from apps.audit.sinks import secret_seal
from apps.core.connections import dedicated_connection
from tests.audit.sinkkit import SECRET, WebhookReceiver

SCHEMA = "t_stream_crash"
EVENTS = 45
BATCH = 10

DELIVER = """
import os, sys, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kms_project.settings")
django.setup()
from django_tenants.utils import schema_context
from apps.audit.streaming import sink_deliver
with schema_context(sys.argv[1]):
    print(sink_deliver(sys.argv[2], tenant="crash"), flush=True)
"""


@pytest.fixture
def crash_schema(db: None) -> Iterator[str]:
    """A scratch tenant schema with EVENTS chained events and one webhook sink, committed (the
    delivering processes use their own connections)."""
    with dedicated_connection(application_name="kcm-test") as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute("SELECT public.kcm_clone_schema('kcm_template', %s)", [SCHEMA])
        conn.execute(f"SET search_path = {SCHEMA}, public")
        for index in range(EVENTS):
            content = {
                "occurred_at": "2026-12-05T00:00:00.000000Z", "actor": "system:test",
                "role": "", "source_ip": None, "user_agent": "", "request_id": "",
                "action": "test.stream", "target": f"item:{index}", "target_version": None,
                "outcome": "success", "error_code": "", "details": {"i": index},
            }  # fmt: skip
            conn.execute("SELECT public.kcm_audit_append(%s)", [chain.canonical(content)])
    yield SCHEMA
    with dedicated_connection(application_name="kcm-test") as conn:
        conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")


def _add_sink(url: str) -> str:
    sink_id = str(uuid.uuid4())
    with schema_context(SCHEMA):
        sealed = secret_seal(sink_id, SECRET)
    with dedicated_connection(application_name="kcm-test") as conn:
        conn.execute(
            f"INSERT INTO {SCHEMA}.audit_auditsink (id, kind, name, host, tls, ca_pem, url,"
            " secret_sealed, cursor, failures, last_error, next_attempt_at, created_by,"
            " created_at) VALUES (%s, 'webhook', '', '', false, '', %s, %s, 0, 0, '', now(),"
            " 'test', now())",
            [sink_id, url, sealed],
        )
    return sink_id


def _cursor(sink_id: str) -> int:
    with dedicated_connection(application_name="kcm-test") as conn:
        row = conn.execute(
            f"SELECT cursor FROM {SCHEMA}.audit_auditsink WHERE id = %s", [sink_id]
        ).fetchone()
    assert row is not None
    return int(row[0])


def _deliverer(sink_id: str) -> subprocess.Popen[str]:
    url = urlsplit(os.environ["KCM_DATABASE_URL"])
    database = urlunsplit(url._replace(path="/" + str(connection.settings_dict["NAME"])))
    env = {**os.environ, "KCM_DATABASE_URL": database, "KCM_AUDIT_SINK_BATCH": str(BATCH)}
    return subprocess.Popen(
        [sys.executable, "-c", DELIVER, SCHEMA, sink_id],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_killed_delivery_resumes_from_its_cursor_with_no_gap(crash_schema: str) -> None:
    webhook = WebhookReceiver()
    try:
        sink_id = _add_sink(webhook.url)
        first = _deliverer(sink_id)

        def kill_on_third(index: int) -> None:
            if index == 3:  # the third batch reached the receiver; its sender dies unanswered
                first.send_signal(signal.SIGKILL)
                first.wait(10)

        webhook.on_request = kill_on_third
        assert first.wait(60) == -signal.SIGKILL
        assert _cursor(sink_id) == 2 * BATCH  # the batch in flight was not acknowledged
        webhook.on_request = None
        second = _deliverer(sink_id)
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 0 and out.strip() == "idle"
        batches = webhook.verified_batches()
    finally:
        webhook.close()
    starts = [batch[0]["seq"] for batch in batches]
    assert starts == [1, 11, 21, 21, 31, 41]  # the third batch again, after the crash
    for batch in batches:
        assert [e["seq"] for e in batch] == list(range(batch[0]["seq"], batch[-1]["seq"] + 1))
    unique = {e["seq"]: e for batch in batches for e in batch}
    events = [unique[seq] for seq in sorted(unique)]
    count, _, problem = chain.verify_events(events)
    assert problem is None and count == EVENTS
    assert _cursor(sink_id) == EVENTS


def test_a_sink_another_worker_is_delivering_is_skipped_not_sent_twice(
    crash_schema: str,
) -> None:
    webhook = WebhookReceiver()
    try:
        sink_id = _add_sink(webhook.url)
        worker = dedicated_connection(application_name="kcm-test")
        with worker, worker.transaction():  # the first worker holds the sink's row
            worker.execute(
                f"SELECT id FROM {SCHEMA}.audit_auditsink WHERE id = %s FOR UPDATE", [sink_id]
            )
            second = _deliverer(sink_id)
            out, _ = second.communicate(timeout=60)
            assert out.strip() == "busy" and webhook.requests == []
        third = _deliverer(sink_id)
        out, _ = third.communicate(timeout=60)
        assert out.strip() == "idle" and len(webhook.requests) == EVENTS // BATCH + 1
    finally:
        webhook.close()
