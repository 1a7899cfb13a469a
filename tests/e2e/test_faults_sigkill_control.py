"""A web worker SIGKILLed in the middle of a control-plane write leaves no half-written state.

Key admins rotate a service key (L3) over and over while every gunicorn worker is SIGKILLed,
twice. A rotation is one transaction: the new version, the key's primary version and the
`key.rotate` audit event commit together or not at all. Afterwards: the versions are 1..N
with no gap, the primary is N, there is exactly one `key.rotate` success event per version
after the first, every rotation answered 200 has its event, and data keys still work under
the new primary version. (tests/e2e/test_dataplane_sigkill.py does the same for the data
plane's audit.)
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import psycopg
import pytest

from bench.common import HttpClient

from .stack import RATE_LIMITS_AWAY, LiveStack
from .tenantkit import (
    CONTEXT,
    KEY_ADMIN,
    KEY_USER,
    call,
    create_chain,
    provision_tenant,
    service_path,
    serving_workers,
)

pytestmark = pytest.mark.e2e

THREADS = 3


def test_a_rotation_killed_mid_request_is_all_or_nothing() -> None:
    env = {**os.environ, **RATE_LIMITS_AWAY}
    with LiveStack(web_workers=2, env=env) as stack:
        tenant = provision_tenant(stack, "killrotate", (KEY_ADMIN, KEY_USER))
        create_chain(stack, tenant)
        key = call(stack, tenant, KEY_ADMIN, "GET", f"{service_path()}/")
        assert key.status == 200, key
        key_id = str(key.body["id"])
        path = f"/api/v1/keys/{key_id}/rotate/"
        acknowledged: set[str] = set()
        statuses: dict[str, int] = {}
        lock = threading.Lock()
        stop = threading.Event()

        def rotate(index: int) -> None:
            client = HttpClient(stack.port, tenant.host, tenant.tokens[KEY_ADMIN])
            number = 0
            while not stop.is_set():
                number += 1
                request_id = f"rotate-{index}-{number}"
                client.headers["X-Request-Id"] = request_id
                try:
                    status = client.send("POST", path, b"{}")[0]
                except OSError as exc:  # the worker died under this request
                    outcome = type(exc).__name__
                    time.sleep(0.05)
                else:
                    outcome = str(status)
                    if status == 200:
                        with lock:
                            acknowledged.add(request_id)
                with lock:
                    statuses[outcome] = statuses.get(outcome, 0) + 1

        threads = [threading.Thread(target=rotate, args=(i,), daemon=True) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        killed = 0
        for _ in range(2):
            time.sleep(2.0)
            for pid in serving_workers(stack, tenant):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        killed_at = time.monotonic()
        recovered = _first_ok(stack, tenant, path)
        print(
            f"\nkilled {killed} workers; answers {statuses}; time to recover: a rotation "
            f"answered 200 {recovered - killed_at:.2f} s after the last kill"
        )
        time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join(30)

        assert killed >= 4
        assert len(acknowledged) > 10, statuses
        # Every answer was a 200 or a dropped connection: no 500, no 409 from a stuck lock.
        assert set(statuses) <= {"200", "RemoteDisconnected", "ConnectionResetError",
                                 "ConnectionRefusedError", "BrokenPipeError"}, statuses  # fmt: skip

        versions, primary, events = _state(stack.env["KCM_DATABASE_URL"], tenant.schema, key_id)
        assert versions == list(range(1, len(versions) + 1)), versions
        assert primary == versions[-1], (primary, versions[-1])
        rotations = [request_id for request_id, outcome in events if outcome == "success"]
        assert len(rotations) == len(versions) - 1, (len(rotations), len(versions))
        missing = acknowledged - set(rotations)
        assert not missing, f"{len(missing)} acknowledged rotations have no audit event"

        generated = call(
            stack, tenant, KEY_USER, "POST", f"{service_path()}/generate-data-key/",
            {"context": CONTEXT},
        )  # fmt: skip
        assert generated.status == 200, generated
        print(f"{len(versions)} versions, {len(acknowledged)} rotations acknowledged")


def _first_ok(stack: LiveStack, tenant: Any, path: str) -> float:
    deadline = time.monotonic() + 30
    reply: Any = None
    while time.monotonic() < deadline:
        try:
            reply = call(stack, tenant, KEY_ADMIN, "POST", path, {})
        except OSError as exc:
            reply = exc
        if getattr(reply, "status", None) == 200:
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError(
        f"no rotation answered 200 within 30 s of the last kill: {reply}\n"
        f"web server's log:\n{stack.log('web')[-3000:]}"
    )


def _state(url: str, schema: str, key_id: str) -> tuple[list[int], int, list[tuple[str, str]]]:
    """The key's versions, its primary, and its key.rotate events (request id, outcome),
    pending or chained."""
    with psycopg.connect(url, autocommit=True) as conn:
        versions = [
            int(row[0])
            for row in conn.execute(
                f'SELECT version FROM "{schema}".keychain_servicekeyversion'
                " WHERE key_id = %s ORDER BY version",
                [key_id],
            )
        ]
        row = conn.execute(
            f'SELECT primary_version FROM "{schema}".keychain_servicekey WHERE id = %s', [key_id]
        ).fetchone()
        assert row is not None
        events: list[tuple[str, str]] = []
        pending = conn.execute(f'SELECT body FROM "{schema}".audit_auditpending')
        for (body,) in pending:
            event = json.loads(body)
            if event.get("action") == "key.rotate" and event.get("target") == key_id:
                events.append((event.get("request_id"), event.get("outcome")))
        chained = conn.execute(
            f'SELECT request_id, outcome FROM "{schema}".audit_auditevent'
            " WHERE action = %s AND target = %s",
            ["key.rotate", key_id],
        )
        events += [(r[0], r[1]) for r in chained]
    return versions, int(row[0]), events
