"""The benches run to their end, on a small scale, and report what they measured.

Nothing else runs them, and three had stopped working unnoticed:
- bench.killswitch: bench.common started its Celery worker without the probe task the bench
  sends, so every run stopped at the first warm-up with NotRegistered.
- bench.rewrap: the stack logs at WARNING, so the worker's "ready." line never came and the
  bench timed out waiting for it.
- bench.load and bench.hyok: one token past the API's rate limit, so a third of their
  requests were 429s, counted as errors and in the throughput compared.
Their figures are the benches' business; these tests check that the figures are real.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from typing import Any

import pytest

from .stack import REPO

pytestmark = pytest.mark.e2e


def _bench(topic: str, **env: str) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-m", f"bench.{topic}"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    figures: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    assert figures["bench"] == topic, figures
    return figures


def test_the_kill_switch_bench_sees_every_process_refuse() -> None:
    figures = _bench("killswitch", BENCH_TRIALS="3")
    assert figures["trials"] == 3
    # Both gunicorn workers and the Celery worker refused in every trial (one that never did
    # would make its trial's figure infinite), and nothing sent after the disable succeeded.
    assert figures["processes"] == 3
    assert math.isfinite(figures["p99_ms"]), figures
    assert (figures["late_successes"], figures["unexpected"]) == (0, 0), figures


def test_the_load_bench_gets_no_error() -> None:
    figures = _bench("load", BENCH_LOAD_SECONDS="3")
    assert figures["requests"] > 0 and figures["errors"] == 0, figures
    assert figures["worker_restarts"] == 0, figures


def test_the_rewrap_bench_moves_every_service_key() -> None:
    figures = _bench("rewrap", BENCH_REWRAP_KEYS="200", BENCH_SWEEP_TENANTS="5")
    assert figures["service_keys"] == 200 and figures["job_keys_per_s"] > 0, figures
    assert (figures["sweep_tenants"], figures["sweep_due"]) == (5, 0), figures


def test_the_audit_bench_compares_three_deployments() -> None:
    figures = _bench(
        "audit", BENCH_AUDIT_ROUNDS="1", BENCH_AUDIT_SECONDS="1", BENCH_AUDIT_EVENTS="200"
    )
    assert figures["http_errors"] == 0, figures
    # Each side served requests; the audited one recorded them (the bench asserts that the
    # diagnostic side really ran without a durable commit, and the others with one).
    assert min(figures["audited_rps"], figures["unaudited_rps"]) > 0, figures
    assert figures["no_flush_rounds"][0] > 0 and figures["audited_events_written"] > 0, figures
    assert figures["flush_free_ceiling"] > 0 and figures["wal_flushes_per_event"] > 0, figures
    assert figures["export_events"] == 201, figures
