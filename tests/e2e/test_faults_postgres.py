"""PostgreSQL restarted under load: every request fails fast with 503 `database_unavailable`
(problem+json) while it is down, on the data plane and on Django's path alike; both recover by
themselves once it is back, without restarting a worker; and every operation answered 200
has its audit event afterwards (0 lost writes).

The server is the test's own (faultkit.PrivatePostgres), stopped with `pg_ctl stop -m fast`
and started again while key users call generate-data-key on both paths.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import psycopg
import pytest

from .faultkit import (
    Load,
    PrivatePostgres,
    audited_request_ids,
    describe,
    first_ok_after,
)
from .stack import RATE_LIMITS_AWAY, LiveStack
from .tenantkit import (
    KEY_ADMIN,
    KEY_USER,
    Tenant,
    call,
    create_chain,
    on_every_worker,
    provision_tenant,
    service_path,
    web_worker_pids,
)

pytestmark = pytest.mark.e2e

DOWN_SECONDS = 4.0
FAIL_FAST_SECONDS = 2.0  # a refusal while the database is down takes less than this
RECOVERY_LIMIT = 20.0


@pytest.mark.parametrize("group_commit", ["false", "true"])
def test_requests_fail_fast_while_postgresql_restarts_and_recover_by_themselves(
    group_commit: str,
) -> None:
    with PrivatePostgres() as pg:
        env = pg.env(
            KCM_DATAPLANE="fast",
            KCM_AUDIT_GROUP_COMMIT=group_commit,  # the data plane's own writer thread, or not
            **RATE_LIMITS_AWAY,
            KCM_AUDIT_SEAL_MILLISECONDS="500",
        )
        with LiveStack(web_workers=2, env=env) as stack:
            tenant = provision_tenant(stack, "pgfault", (KEY_ADMIN, KEY_USER))
            create_chain(stack, tenant)
            workers = web_worker_pids(stack)
            # Every worker serves an operation first, so each has its key cache and the
            # listener thread that keeps it fresh (the load's few connections may all land on
            # one worker).
            on_every_worker(
                lambda: call(
                    stack, tenant, KEY_USER, "POST", f"{service_path()}/generate-data-key/", {}
                ),
                workers,
            )
            _wait_for(
                lambda: _listeners(stack) == len(workers),
                "the key-cache listeners before the restart",
                explain=lambda: _activity(stack),
            )
            with Load(stack, tenant) as load:
                time.sleep(2.0)
                stop_took = pg.stop()
                down_at = time.monotonic()
                time.sleep(DOWN_SECONDS / 2)
                probes = {path: _probe(stack, tenant, path) for path in ("fast", "django")}
                time.sleep(DOWN_SECONDS / 2)
                start_took = pg.start()
                up_at = time.monotonic()
                recovered: dict[str, float] = {}
                while time.monotonic() - up_at < RECOVERY_LIMIT and len(recovered) < 2:
                    for path in ("fast", "django"):
                        moment = first_ok_after(load.snapshot(), path, up_at)
                        if moment is not None:
                            recovered.setdefault(path, moment - up_at)
                    time.sleep(0.1)
                time.sleep(1.0)
            answers = load.snapshot()
            summary = describe(answers)
            print(
                f"\npostgres stop {stop_took:.2f} s, down {up_at - down_at:.1f} s, "
                f"start {start_took:.2f} s; answers: {summary}"
            )
            for path, seconds in sorted(recovered.items()):
                print(f"time to recover ({path}): {seconds:.2f} s after PostgreSQL was back")

            # Both paths recovered by themselves, with the same worker processes.
            assert set(recovered) == {"fast", "django"}, (recovered, summary)
            assert web_worker_pids(stack) == workers

            # While it was down: 503 database_unavailable as problem+json, never a 500.
            for path, (status, content_type, body) in probes.items():
                assert status == 503, (path, status, body)
                assert content_type == "application/problem+json", (path, content_type)
                assert body["code"] == "database_unavailable", (path, body)
            refused = [a for a in answers if a.status != 200]
            assert refused, summary
            assert {(a.status, a.code) for a in refused} == {(503, "database_unavailable")}, summary
            for path in ("fast", "django"):
                assert any(a.path == path and a.status == 503 for a in answers), summary
            slowest = max(a.seconds for a in refused)
            print(f"slowest refusal: {slowest:.2f} s")
            assert slowest < FAIL_FAST_SECONDS, summary

            # 0 lost writes: every 200 has its audit event.
            ok = {a.request_id for a in answers if a.status == 200}
            recorded = audited_request_ids(
                stack.env["KCM_DATABASE_URL"], tenant.schema, "datakey.generate"
            )
            missing = ok - recorded
            assert not missing, f"{len(missing)} of {len(ok)} acknowledged operations lost"

            # The background threads reconnected too: each worker's key-cache listener is
            # listening again (on a new connection: none survives the restart), and the audit
            # sealer chains what was left pending.
            _wait_for(
                lambda: _listeners(stack) == len(workers),
                "the key-cache listeners",
                explain=lambda: _activity(stack),
            )
            _wait_for(lambda: _pending(stack, tenant.schema) == 0, "the sealer")


def _probe(stack: LiveStack, tenant: Tenant, path: str) -> tuple[int, str, dict[str, object]]:
    """One request on `path` ("fast" or "django"): status, content type, parsed body."""
    content_type = "application/json" if path == "fast" else "application/json;charset=utf-8"
    status, headers, raw = stack.request(
        "POST",
        f"{service_path()}/generate-data-key/",
        host=tenant.host,
        data=b'{"context": {"purpose": "e2e"}}',
        headers={
            "Authorization": f"Bearer {tenant.tokens[KEY_USER]}",
            "Content-Type": content_type,
        },
        timeout=10,
    )
    try:
        body = json.loads(raw)
    except ValueError:
        body = {"raw": raw[:300].decode(errors="replace")}
    return status, headers.get("Content-Type", ""), body


def _listeners(stack: LiveStack) -> int:
    with psycopg.connect(stack.env["KCM_DATABASE_URL"], autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            " AND datname = current_database()",
            ["kcm-keychain-listener"],
        ).fetchone()
    return int(row[0]) if row else 0


def _activity(stack: LiveStack) -> str:
    with psycopg.connect(stack.env["KCM_DATABASE_URL"], autocommit=True) as conn:
        rows = conn.execute(
            "SELECT application_name, pid, backend_start, state, left(query, 40)"
            " FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchall()
    return "\n".join(repr(row) for row in rows)


def _pending(stack: LiveStack, schema: str) -> int:
    with psycopg.connect(stack.env["KCM_DATABASE_URL"], autocommit=True) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{schema}".audit_auditpending').fetchone()
    return int(row[0]) if row else 0


def _wait_for(
    check: Callable[[], bool],
    what: str,
    timeout: float = 20.0,
    explain: Callable[[], str] = lambda: "",
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{explain()}"
        time.sleep(0.2)
