"""Acceptance 2, scaled down: tools/chaos_rewrap.py rotates every tenant's L2 while killing the
Celery worker with SIGKILL at least five times; the job finishes and nothing is lost.

The full run (100 tenants x 1,000 service keys) is the same script with its defaults."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .stack import REPO

pytestmark = pytest.mark.e2e


def test_a_rewrap_killed_five_times_finishes_with_nothing_lost() -> None:
    done = subprocess.run(
        # About 8 s of work at this pace: more than five kills take, so that all land in it.
        [sys.executable, "tools/chaos_rewrap.py", "--tenants", "3", "--keys", "600",
         "--kills", "5", "--batch-size", "20", "--pause-ms", "150",
         "--run-min", "0.2", "--run-max", "1.0"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    result = json.loads(lines[-1])
    assert result["kills"] >= 5, result
    assert (result["run_state"], result["jobs_by_state"]) == ("succeeded", {"succeeded": 3})
    assert (result["service_keys"], result["verified_ok"], result["lost"]) == (1800, 1800, 0)
    assert (result["job_done"], result["job_failed"], result["misplaced"]) == (1800, 0, 0)
    assert result["l2_versions"] == {"v1=RETIRED,v2=ENABLED": 3}
    # The kills landed while keys were being moved (the script kills only an unfinished run).
    assert any(0 < kill["done"] < 1800 for kill in result["kill_log"]), result["kill_log"]
