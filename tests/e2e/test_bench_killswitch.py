"""`python -m bench.killswitch` runs to its end and reports what it measured.

Its Celery worker is started by bench.common, not by LiveStack, and it once lacked the probe
task the bench sends: every run stopped at the first warm-up with NotRegistered, and nothing
noticed. A few trials are enough to show the bench works; its timing is the bench's business.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from .stack import REPO

pytestmark = pytest.mark.e2e


def test_the_kill_switch_bench_runs_and_every_process_refuses() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.killswitch"],
        cwd=REPO,
        env={**os.environ, "BENCH_TRIALS": "3"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert figures["bench"] == "killswitch" and figures["trials"] == 3
    # Both gunicorn workers and the Celery worker refused in every trial (a process that
    # never refused would make the trial's figure infinite), and nothing sent after the
    # disable answer succeeded.
    assert figures["processes"] == 3
    assert math.isfinite(figures["p99_ms"]), figures
    assert (figures["late_successes"], figures["unexpected"]) == (0, 0), figures
