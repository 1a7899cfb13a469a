"""The broker down: the data-key API is unaffected, the calls that queue a job (an L1 rotation
with its rewrap, an audit export) answer at once instead of hanging, and the jobs run by
themselves once the broker is back (an export is requested again), with the same Celery worker and beat.

The stack's broker is the embedded filesystem broker (kms_project/broker.py): its queue
folder. "Down" is that folder gone (as a lost mount would be); "back" is the folder back,
empty. Every message published meanwhile is lost, as a Redis restarted without persistence
would lose it: what brings the jobs back is KCM's own bookkeeping (the rotation sweep requeues
stalled rewrap jobs), not the broker. An audit export cannot wait that way: it is refused at
once (503 `broker_unavailable`, and listed as failed with that code) and requested again.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.common import HttpClient

from .stack import LiveStack
from .tenantkit import (
    CONTEXT,
    KEY_ADMIN,
    KEY_USER,
    Tenant,
    call,
    create_chain,
    poll,
    provision_tenant,
    service_path,
)

pytestmark = pytest.mark.e2e

AUDITOR = "auditor"
ANSWER_LIMIT = 2.0  # seconds: an API call that queues a job answers within this, broker or not


def test_jobs_queued_while_the_broker_is_down_run_when_it_is_back() -> None:
    env = {
        **os.environ,
        "KCM_REWRAP_STALL_SECONDS": "3",
        "KCM_ROTATION_SWEEP_SECONDS": "1",
    }
    with LiveStack(web_workers=2, celery_pool="solo", env=env) as stack:
        assert stack.tmp is not None
        stack._spawn(
            "beat",
            [sys.executable, "-m", "celery", "-A", "kms_project", "beat", "-l", "info",
             "-s", str(stack.tmp / "beat-schedule")],
        )  # fmt: skip
        tenant = provision_tenant(stack, "brokerdown", (KEY_ADMIN, KEY_USER, AUDITOR))
        l1_id = create_chain(stack, tenant)
        worker_pid = stack.procs["worker"].pid
        queue = Path(stack.env["KCM_STATE_DIR"]) / "broker" / "queue"
        aside = queue.with_name("queue.down")

        queue.rename(aside)  # the broker is down
        down_at = time.monotonic()
        try:
            statuses = _data_keys(stack, tenant, 50)
            assert statuses == {200: 50}, statuses

            rotate, rotate_seconds = _timed(
                lambda: call(stack, tenant, KEY_ADMIN, "POST", f"/api/v1/keys/{l1_id}/rotate/")
            )
            export, export_seconds = _timed(
                lambda: call(
                    stack, tenant, AUDITOR, "POST", "/api/v1/audit/exports/", {"format": "jsonl"}
                )
            )
            print(
                f"\nbroker down: rotate {rotate.status} in {rotate_seconds:.2f} s, "
                f"export {export.status} in {export_seconds:.2f} s"
            )
            assert rotate.status == 200, rotate
            assert rotate.body["primary_version"] == 2, rotate
            # An export cannot wait for the broker: refused at once, and failed, not queued.
            assert (export.status, export.code) == (503, "broker_unavailable"), export
            assert max(rotate_seconds, export_seconds) < ANSWER_LIMIT
            time.sleep(2.0)
            assert _job(stack, tenant)["state"] in ("queued", "running"), _job(stack, tenant)
        finally:
            aside.rename(queue)  # the broker is back, empty: what was sent meanwhile is lost
        up_at = time.monotonic()

        job = poll(lambda: _job(stack, tenant), lambda j: j["state"] == "succeeded", 60)
        rewrapped = time.monotonic() - up_at
        done = poll(
            lambda: call(
                stack, tenant, AUDITOR, "POST", "/api/v1/audit/exports/", {"format": "jsonl"}
            ),
            lambda reply: reply.status == 202,
            30,
        )
        exported = time.monotonic() - up_at
        print(
            f"broker down {up_at - down_at:.1f} s; time to recover: rewrap job succeeded "
            f"{rewrapped:.2f} s, an export queued again {exported:.2f} s after it was back"
        )
        assert job["state"] == "succeeded", job
        assert done.status == 202, done
        # The export refused is listed as failed with its code; the one requested since runs.
        finished = poll(
            lambda: call(stack, tenant, AUDITOR, "GET", "/api/v1/audit/exports/").body["results"],
            lambda jobs: jobs[0]["state"] in ("succeeded", "failed"),
            60,
        )
        assert [(j["state"], j["error_code"]) for j in finished] == [
            ("succeeded", ""),
            ("failed", "broker_unavailable"),
        ], finished
        assert stack.procs["worker"].pid == worker_pid and stack.procs["worker"].poll() is None
        assert _data_keys(stack, tenant, 10) == {200: 10}


def _data_keys(stack: LiveStack, tenant: Tenant, count: int) -> dict[int, int]:
    client = HttpClient(stack.port, tenant.host, tenant.tokens[KEY_USER])
    statuses: dict[int, int] = {}
    body = json.dumps({"context": CONTEXT}).encode()
    for _ in range(count):
        status = client.send("POST", f"{service_path()}/generate-data-key/", body)[0]
        statuses[status] = statuses.get(status, 0) + 1
    client.close()
    return statuses


def _timed(action: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = action()
    return result, time.monotonic() - started


def _job(stack: LiveStack, tenant: Tenant) -> dict[str, Any]:
    jobs = call(stack, tenant, KEY_ADMIN, "GET", "/api/v1/rotation/jobs/")
    assert jobs.status == 200, jobs
    results = jobs.body["results"]
    assert results, jobs
    return dict(results[0])
