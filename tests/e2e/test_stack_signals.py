"""A benchmark (or test run) stopped with SIGTERM, SIGHUP or Ctrl-C leaves no gunicorn or Celery
worker behind, and drops its scratch database.

Every bench starts its servers through LiveStack (bench/common.py); the helper below does what
a bench does (start a stack with a worker, then work) until it is signalled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .stack import REPO, LiveStack

HELPER = """
import json, sys, time
from tests.e2e.stack import LiveStack
with LiveStack(web_workers=1, celery_pool="solo") as stack:
    print(json.dumps({"pids": [p.pid for p in stack.procs.values()], "db": stack.database}),
          flush=True)
    time.sleep(600)
"""


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = {int(child) for child in (task / "children").read_text().split()}
            except OSError:
                continue
            pending += children - found
            found |= children
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped by init counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize(
    ("signum", "exit_code"),
    [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, -signal.SIGINT)],
    ids=["SIGTERM", "SIGINT"],
)
def test_a_signalled_bench_leaves_no_server_behind(signum: int, exit_code: int) -> None:
    helper = subprocess.Popen(
        [sys.executable, "-c", HELPER], cwd=REPO, env=os.environ.copy(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert helper.stdout is not None
        line = helper.stdout.readline()
        assert line, helper.communicate(timeout=30)[1][-3000:]
        started = json.loads(line)
        servers = _descendants(helper.pid)
        # gunicorn's master and its worker, and the Celery worker
        assert set(started["pids"]) <= servers and len(servers) >= 3, servers

        helper.send_signal(signum)
        _, stderr = helper.communicate(timeout=60)
        assert helper.returncode == exit_code, stderr[-3000:]
        survivors = {pid for pid in servers if _alive(pid)}
        assert not survivors, f"left running: {survivors}"
        with LiveStack(env=os.environ.copy())._admin_connection() as conn:
            left = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (started["db"],)
            ).fetchall()
        assert not left, f"database {started['db']} was not dropped"
    finally:
        if helper.poll() is None:
            helper.kill()
            helper.wait()


FORKING_HELPER = """
import json, multiprocessing, os, signal, sys, time
from tests.e2e.stack import LiveStack
with LiveStack(web_workers=1) as stack:
    # As bench.dataplane's paced clients: processes forked from the bench, ended with SIGTERM
    # (as its pool does when their work is done). Plain processes, not a Pool: the Pool's own
    # shutdown once hung here for two minutes, which is not what this test is about.
    clients = [multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
               for _ in range(2)]
    for client in clients:
        client.start()
    time.sleep(0.2)
    for client in clients:
        client.terminate()
        client.join(30)
    status = stack.request("GET", "/healthz", host="localhost")[0]
    print(json.dumps({"status": status, "alive": [p.poll() is None for p in stack.procs.values()],
                      "clients": [client.exitcode for client in clients]}), flush=True)
"""


def test_a_forked_client_told_to_stop_leaves_the_stack_serving() -> None:
    """Found in bench.dataplane: its client processes inherited the stack's signal handler, so
    the pool's SIGTERM at their end made them stop the bench's servers (and hang)."""
    result = subprocess.run(
        [sys.executable, "-c", FORKING_HELPER], cwd=REPO, env=os.environ.copy(),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    reported = json.loads(result.stdout.strip().splitlines()[-1])
    # The clients died of the signal; the stack still serves.
    assert reported == {"status": 200, "alive": [True], "clients": [-15, -15]}, reported
