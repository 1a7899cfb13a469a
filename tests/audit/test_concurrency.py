"""Eight concurrent writers x 10,000 events: the chain has no gaps and verifies.

Half the writers chain each event at once (as lifecycle changes do), half commit them as
pending (as data-key requests do) while a sealer chains those concurrently."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from apps.audit import chain
from apps.core.connections import dedicated_connection

WRITERS = 8
EVENTS_EACH = 10_000
SCHEMA = "t_audit_stress"


def _connect() -> psycopg.Connection[Any]:
    conn = dedicated_connection(application_name="kcm-test")
    conn.execute(f"SET search_path = {SCHEMA}, public")
    return conn


@pytest.fixture
def stress_schema(db: None) -> Any:
    """A scratch tenant schema, committed (the writers use their own connections)."""
    with dedicated_connection(application_name="kcm-test") as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute("SELECT public.kcm_clone_schema('kcm_template', %s)", [SCHEMA])
    yield
    with dedicated_connection(application_name="kcm-test") as conn:
        conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")


PENDING = "INSERT INTO audit_auditpending (body) VALUES (%s)"
APPEND = "SELECT public.kcm_audit_append(%s)"


def _sealer(stop: threading.Event, errors: list[BaseException]) -> None:
    try:
        with _connect() as conn:
            while not stop.wait(0.05):
                conn.execute("SELECT public.kcm_audit_seal()")
    except BaseException as exc:
        errors.append(exc)


def _writer(number: int, errors: list[BaseException]) -> None:
    chained = number % 2 == 0
    try:
        with _connect() as conn:
            for index in range(EVENTS_EACH):
                content = {
                    "occurred_at": "2026-11-28T00:00:00.000000Z",
                    "actor": f"token:writer{number}",
                    "role": "key_user",
                    "source_ip": "127.0.0.1",
                    "user_agent": "stress",
                    "request_id": f"{number}-{index}",
                    "action": "datakey.generate",
                    "target": "service_key:payments",
                    "target_version": 1,
                    "outcome": "success",
                    "error_code": "",
                    "details": {"index": index},
                }
                conn.execute(APPEND if chained else PENDING, [chain.canonical(content)])
    except BaseException as exc:  # reported by the test
        errors.append(exc)


def test_concurrent_writers_build_one_gapless_verifiable_chain(stress_schema: None) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()
    sealer = threading.Thread(target=_sealer, args=(stop, errors))
    sealer.start()
    threads = [threading.Thread(target=_writer, args=(n, errors)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    sealer.join()
    assert not errors, errors[:3]
    with _connect() as conn:
        conn.execute("SELECT public.kcm_audit_seal()")
        assert conn.execute("SELECT count(*) FROM audit_auditpending").fetchone() == (0,)
        rows = conn.execute(
            "SELECT seq, prev_hash, hash, occurred_at, actor, role, host(source_ip), user_agent,"
            " request_id, action, target, target_version, outcome, error_code, details"
            " FROM audit_auditevent ORDER BY seq"
        ).fetchall()
    events = [
        {
            "seq": r[0],
            "prev_hash": r[1],
            "hash": r[2],
            "occurred_at": chain.timestamp(r[3]),
            "actor": r[4],
            "role": r[5],
            "source_ip": r[6],
            "user_agent": r[7],
            "request_id": r[8],
            "action": r[9],
            "target": r[10],
            "target_version": r[11],
            "outcome": r[12],
            "error_code": r[13],
            "details": r[14],
        }
        for r in rows
    ]
    count, _, problem = chain.verify_events(events)
    assert problem is None, problem
    assert count == WRITERS * EVENTS_EACH
    assert [e["seq"] for e in events] == list(range(1, WRITERS * EVENTS_EACH + 1))
    assert {e["actor"] for e in events} == {f"token:writer{n}" for n in range(WRITERS)}


def test_the_process_sealer_chains_pending_events_within_a_second(
    stress_schema: None, settings: Any
) -> None:
    from apps.audit.sealer import _Sealer

    settings.KCM_AUDIT_SEAL_SECONDS = 0.1
    content: dict[str, Any] = {
        "occurred_at": "2026-11-28T00:00:00.000000Z", "actor": "token:x", "role": "key_user",
        "source_ip": None, "user_agent": "", "request_id": "", "action": "datakey.decrypt",
        "target": "service_key:payments", "target_version": 1, "outcome": "error",
        "error_code": "context_mismatch", "details": {},
    }  # fmt: skip
    with _connect() as conn:
        for _ in range(3):
            conn.execute(PENDING, [chain.canonical(content)])
    sealer = _Sealer()
    sealer.note(SCHEMA)
    try:
        with _connect() as conn:
            for _ in range(30):
                if conn.execute("SELECT count(*) FROM audit_auditpending").fetchone() == (0,):
                    break
                threading.Event().wait(0.1)
            count = conn.execute("SELECT count(*) FROM audit_auditevent").fetchone()
    finally:
        sealer.shutdown()
    assert count == (3,)
