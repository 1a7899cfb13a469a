"""Audit cost and export scale: `python -m bench.audit`.

(a) Data-key throughput over HTTP (generate + decrypt, 8 client threads or
    BENCH_AUDIT_THREADS, each on its own connection, spread evenly over two web workers on the
    default server) with auditing on vs. switched off (KCM_AUDIT_ENABLED=false), two
    identical deployments measured in alternating rounds in one run: `audited_ratio` (target
    >= 0.8), the ratio of the two sides' median rates; each round's rate is printed too.
    It also prints what a durable commit costs on this machine, since that is most of the
    difference: `disk_flush_us`, the median time of an 8 kB write and fdatasync beside the
    PostgreSQL data directory, and `wal_flushes_per_event`, PostgreSQL's WAL fsyncs per audited
    request (pg_stat_io, the client backends' flushes): fewer than one when concurrent commits
    share a flush. A third deployment, a diagnostic only, runs audited with
    synchronous_commit=off (which KCM never uses: it would lose acknowledged events on a
    crash) in the same alternation: `no_flush_ratio` is its ratio, and `flush_free_ceiling`
    what `audited_ratio` would be if an audited request cost nothing but its WAL flush
    (1 / (1 + 1/audited_ratio - 1/no_flush_ratio)): what this disk leaves to gain.
(b) Export of 1,000,000 events (BENCH_AUDIT_EVENTS) as JSON Lines in a separate process:
    events/s and peak RSS, next to the peak RSS of a 10x smaller export (constant memory means
    the two peaks are about equal).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from apps.audit import chain
from bench.common import (
    Operation,
    crypto_operation,
    make_data_keys,
    report,
    run_load,
    spread_clients,
)
from tests.e2e.stack import RATE_LIMITS_AWAY, LiveStack
from tests.e2e.tenantkit import KEY_ADMIN, KEY_USER, create_chain, provision_tenant

ROUNDS = int(os.environ.get("BENCH_AUDIT_ROUNDS", "4"))
SECONDS = float(os.environ.get("BENCH_AUDIT_SECONDS", "6"))
THREADS = int(os.environ.get("BENCH_AUDIT_THREADS", "8"))
EVENTS = int(os.environ.get("BENCH_AUDIT_EVENTS", "1000000"))
# (label, KCM_AUDIT_ENABLED, more environment): measured in this order in every round. The
# last is a diagnostic (see above): libpq passes PGOPTIONS to every connection of that stack.
SIDES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("audited", "true", {}),
    ("unaudited", "false", {}),
    ("no_flush", "true", {"PGOPTIONS": "-c synchronous_commit=off"}),
)


_SHOW_COMMIT = (
    "from django.db import connection\n"
    "with connection.cursor() as c: c.execute('SHOW synchronous_commit'); print(c.fetchone()[0])"
)


def _operations(stack: LiveStack, host: str, token: str) -> list[Operation]:
    clients = spread_clients(stack, host, token, THREADS)  # the same split on both sides
    ciphertexts = make_data_keys(clients[0], 64)
    return [crypto_operation(client, ciphertexts) for client in clients]


def _wal_fsyncs(admin: psycopg.Connection) -> int:
    # The flushes commits wait for (not the WAL writer's, which flushes asynchronous commits).
    row = admin.execute(
        "SELECT coalesce(sum(fsyncs), 0) FROM pg_stat_io"
        " WHERE object = 'wal' AND backend_type = 'client backend'"
    )
    return int(row.fetchone()[0])  # type: ignore[index]


def _disk_flush_us(admin: psycopg.Connection, count: int = 300) -> float:
    """The median time of one 8 kB write and fdatasync in a file next to PostgreSQL's data
    directory (what one WAL flush costs the disk there, as pg_test_fsync measures it)."""
    row = admin.execute("SHOW data_directory").fetchone()
    assert row is not None
    page = os.urandom(8192)
    times = []
    with tempfile.TemporaryFile(dir=os.path.dirname(row[0].rstrip("/"))) as probe:
        for _ in range(count):
            began = time.perf_counter()
            os.pwrite(probe.fileno(), page, 0)
            os.fdatasync(probe.fileno())
            times.append(time.perf_counter() - began)
    return round(statistics.median(times) * 1e6, 1)


def measure_http() -> dict[str, Any]:
    with ExitStack() as stack_of:
        stacks = {}
        for label, audited, extra in SIDES:
            stack = stack_of.enter_context(
                LiveStack(
                    web_workers=2,
                    env={**os.environ, **RATE_LIMITS_AWAY, "KCM_AUDIT_ENABLED": audited, **extra},
                )
            )
            tenant = provision_tenant(stack, "bench", (KEY_ADMIN, KEY_USER))
            create_chain(stack, tenant)
            stacks[label] = (stack, _operations(stack, tenant.host, tenant.tokens[KEY_USER]))
            if label == "audited":
                schema = tenant.schema
            commit = stack.manage("shell", "-c", _SHOW_COMMIT).stdout.strip().splitlines()[-1]
            assert commit == ("off" if extra else "on"), (label, commit)
        rates: dict[str, list[float]] = {label: [] for label, _, _ in SIDES}
        errors = 0
        admin = psycopg.connect(stacks["audited"][0].env["KCM_DATABASE_URL"], autocommit=True)
        # Counted over every round: a backend reports its I/O up to a second late, the
        # unaudited side's own commits are a handful (a token's last use, once a minute), and
        # the no-flush side's commits do not flush (its WAL writer does, and is not counted).
        first_flush, requests = _wal_fsyncs(admin), 0
        for _ in range(ROUNDS):
            for label, _, _ in SIDES:
                stack, operations = stacks[label]
                result = run_load(operations, SECONDS)
                if label == "audited":
                    requests += result.requests
                rates[label].append(result.rate)
                errors += result.errors
        flushes = _wal_fsyncs(admin) - first_flush
        disk_flush_us = _disk_flush_us(admin)
        admin.close()
        audited_stack = stacks["audited"][0]
        events = audited_stack.manage(
            "shell", "-c", "from django_tenants.utils import schema_context\n"
            "from apps.audit.selectors import event_search\n"  # seals pending events first
            f"with schema_context('{schema}'): print(event_search({{'action': 'datakey'}}).count())",
        ).stdout.strip().splitlines()[-1]  # fmt: skip
    best = {label: statistics.median(values) for label, values in rates.items()}
    ratio = best["audited"] / best["unaudited"]
    no_flush_ratio = best["no_flush"] / best["unaudited"]
    return {
        "audited_rounds": [round(rate, 1) for rate in rates["audited"]],
        "unaudited_rounds": [round(rate, 1) for rate in rates["unaudited"]],
        "audited_rps": round(best["audited"], 1),
        "unaudited_rps": round(best["unaudited"], 1),
        "audited_ratio": round(ratio, 3),
        "no_flush_rounds": [round(rate, 1) for rate in rates["no_flush"]],
        "no_flush_ratio": round(no_flush_ratio, 3),
        "flush_free_ceiling": round(1 / (1 + 1 / ratio - 1 / no_flush_ratio), 3)
        if ratio > 0 and no_flush_ratio > 0
        else 0.0,  # a side that served nothing (its errors say why)
        "http_errors": errors,
        "audited_events_written": int(events),
        "wal_flushes_per_event": round(flushes / max(requests, 1), 3),
        "disk_flush_us": disk_flush_us,
    }


def _fill(conn: psycopg.Connection, schema: str, count: int) -> None:
    """A valid chain of `count` events, computed here and loaded with COPY (appending one by one
    through the SQL function would take minutes and measure something else)."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    prev = chain.GENESIS
    with (
        conn.cursor() as cursor,
        cursor.copy(
            f"COPY {schema}.audit_auditevent (seq, occurred_at, actor, role, source_ip, user_agent,"
            " request_id, action, target, target_version, outcome, error_code, details, prev_hash, hash)"
            " FROM STDIN"
        ) as copy,
    ):
        for seq in range(1, count + 1):
            moment = start + timedelta(microseconds=seq * 1000)
            event = {
                "occurred_at": chain.timestamp(moment), "actor": "token:bench", "role": "key_user",
                "source_ip": "127.0.0.1", "user_agent": "bench", "request_id": f"r{seq}",
                "action": "datakey.generate", "target": "service_key:payments", "target_version": 1,
                "outcome": "success", "error_code": "", "details": {"context": {"order": str(seq)}},
            }  # fmt: skip
            digest = chain.event_hash(prev, seq, chain.canonical(event))
            copy.write_row((seq, moment, event["actor"], event["role"], event["source_ip"],
                            event["user_agent"], event["request_id"], event["action"], event["target"],
                            1, "success", "", json.dumps(event["details"]), prev, digest))  # fmt: skip
            prev = digest


_EXPORT = """
import json, resource, time
from django_tenants.utils import schema_context
from apps.audit import export
with schema_context({schema!r}):
    job = export.export_request(filters={{}}, format="jsonl", requested_by="bench")
    began = time.monotonic()
    job = export.export_run(export_id=str(job.pk))
    seconds = time.monotonic() - began
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"count": job.done, "seconds": seconds, "peak_rss_mb": peak}}))
"""


def measure_export() -> dict[str, float]:
    results = {}
    with LiveStack(web_workers=1) as stack:
        admin = psycopg.connect(stack.env["KCM_DATABASE_URL"], autocommit=True)
        for label, count in (("small", max(1, EVENTS // 10)), ("large", EVENTS)):
            schema = f"t_bench_{label}"
            admin.execute("SELECT public.kcm_clone_schema('kcm_template', %s)", [schema])
            began = time.monotonic()
            _fill(admin, schema, count)
            fill_seconds = time.monotonic() - began
            output = stack.manage("shell", "-c", _EXPORT.format(schema=schema), timeout=3600).stdout
            figures = json.loads(output.strip().splitlines()[-1])
            assert figures["count"] == count + 1, figures  # + the export's own audit event
            results[label] = {**figures, "fill_seconds": fill_seconds}
        admin.close()
    large, small = results["large"], results["small"]
    return {
        "export_events": int(large["count"]),
        "export_events_per_s": round(large["count"] / large["seconds"]),
        "export_peak_rss_mb": round(large["peak_rss_mb"], 1),
        "export_small_events": int(small["count"]),
        "export_small_peak_rss_mb": round(small["peak_rss_mb"], 1),
    }


def main() -> None:
    http = measure_http()
    exported = measure_export()
    report(
        [
            f"data keys over HTTP, 8 threads, 2 workers, median of {ROUNDS} alternating {SECONDS:.0f}s rounds:",
            f"  audited   {http['audited_rps']:8.1f} req/s",
            f"  unaudited {http['unaudited_rps']:8.1f} req/s",
            f"  audited_ratio {http['audited_ratio']:.3f} (target >= 0.8); errors {http['http_errors']}",
            f"  diagnostic, audited without a durable commit: no_flush_ratio {http['no_flush_ratio']:.3f};"
            f" if an audited request cost only its flush: {http['flush_free_ceiling']:.3f}",
            f"  {http['wal_flushes_per_event']} WAL flushes per audited request;"
            f" one 8 kB write + fdatasync on this disk: {http['disk_flush_us']} us",
            f"export of {exported['export_events']:,} events: {exported['export_events_per_s']:,} events/s,"
            f" peak RSS {exported['export_peak_rss_mb']} MiB"
            f" (vs {exported['export_small_peak_rss_mb']} MiB for {exported['export_small_events']:,})",
        ],
        {"bench": "audit", **http, **exported},
    )


if __name__ == "__main__":
    main()
