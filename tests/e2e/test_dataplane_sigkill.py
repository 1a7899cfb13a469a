"""The data plane acknowledges an operation only once its audit event is committed: under load,
SIGKILL every gunicorn worker (twice); every request answered 200 must have its event.

Each request carries its own X-Request-Id, which the event records; the events are read from
the tenant's log, chained or still pending, after the load.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import psycopg
import pytest

from bench.common import HttpClient
from tests.e2e.stack import RATE_LIMITS_AWAY, LiveStack
from tests.e2e.tenantkit import (
    CONTEXT,
    KEY_ADMIN,
    KEY_USER,
    create_chain,
    provision_tenant,
    service_path,
    serving_workers,
)

pytestmark = pytest.mark.e2e

THREADS = 6


@pytest.mark.parametrize("group_commit", ["false", "true"])
def test_every_acknowledged_operation_survives_a_sigkill_of_the_workers(group_commit: str) -> None:
    env = {
        **os.environ,
        "KCM_DATAPLANE": "fast",
        "KCM_AUDIT_GROUP_COMMIT": group_commit,
        **RATE_LIMITS_AWAY,
    }
    with LiveStack(web_workers=2, env=env) as stack:
        tenant = provision_tenant(stack, "sigkill", (KEY_ADMIN, KEY_USER))
        create_chain(stack, tenant)
        path = f"{service_path()}/generate-data-key/"
        body = ('{"context": {"purpose": "' + CONTEXT["purpose"] + '"}}').encode()
        acknowledged: set[str] = set()
        failed: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def load(index: int) -> None:
            client = HttpClient(stack.port, tenant.host, tenant.tokens[KEY_USER])
            number = 0
            while not stop.is_set():
                number += 1
                request_id = f"sigkill-{index}-{number}"
                client.headers["X-Request-Id"] = request_id
                try:
                    status = client.send("POST", path, body)[0]
                except OSError as exc:  # the worker died under this request: not acknowledged
                    failed.append(type(exc).__name__)
                    time.sleep(0.05)
                    continue
                if status == 200:
                    with lock:
                        acknowledged.add(request_id)

        threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        killed = 0
        for _ in range(2):
            time.sleep(2.0)
            for pid in serving_workers(stack, tenant):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        time.sleep(2.0)
        stop.set()
        for thread in threads:
            thread.join(30)

        with psycopg.connect(stack.env["KCM_DATABASE_URL"], autocommit=True) as conn:
            recorded = _request_ids(conn, tenant.schema)
        assert killed >= 4
        assert len(acknowledged) > 100, (len(acknowledged), failed[:5])
        missing = acknowledged - recorded
        assert not missing, f"{len(missing)} acknowledged operations have no audit event"


def _request_ids(conn: Any, schema: str) -> set[str]:
    # Pending first: an event the sealer chains in between is then found in the chain.
    pending = conn.execute(
        f'SELECT body::jsonb ->> %s FROM "{schema}".audit_auditpending', ["request_id"]
    )
    ids = {row[0] for row in pending}
    rows = conn.execute(
        f'SELECT request_id FROM "{schema}".audit_auditevent WHERE action = %s',
        ["datakey.generate"],
    )
    ids.update(row[0] for row in rows)
    return ids
