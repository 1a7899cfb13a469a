"""The web server as every launcher starts it (`python -m kms_project.web`): granian by default,
gunicorn with KCM_WEB_SERVER=gunicorn. A worker that dies is replaced and the node keeps
serving; both servers answer the same application."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.stack import LiveStack
from tests.e2e.tenantkit import listening_worker_pids, web_worker_pids

pytestmark = pytest.mark.e2e


def _healthy(stack: LiveStack) -> bool:
    try:
        status, _headers, _body = stack.request("GET", "/healthz", host="localhost")
    except OSError:
        return False
    return status == 200


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> float:
    """Poll `condition` until it holds; the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"{what}: not within {seconds} s"
        time.sleep(0.02)
    return time.monotonic() - started


def test_granian_replaces_a_killed_worker_and_keeps_serving() -> None:
    """With both workers serving, one SIGKILLed: every request sent after it died is answered
    by the other, and a replacement takes its place by itself."""
    env = {k: v for k, v in os.environ.items() if k != "KCM_WEB_SERVER"}
    with LiveStack(web_workers=2, env=env) as stack:
        cmdline = Path(f"/proc/{stack.procs['web'].pid}/cmdline").read_bytes()
        assert b"kms_project.web" in cmdline
        # The stack is up once one worker answers; the other may still be loading. Killing the
        # only worker that serves would leave nothing listening (each granian worker has its
        # own socket on Linux: docs/operations.md), which is not what this test is about.
        _wait_for(lambda: len(listening_worker_pids(stack)) == 2, 30, "both workers listening")
        before = web_worker_pids(stack)
        assert len(before) == 2, before
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: victim not in web_worker_pids(stack), 10, f"{victim} gone")

        answers: list[bool] = []
        stop = threading.Event()

        def keep_asking() -> None:
            while not stop.is_set():
                answers.append(_healthy(stack))

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            took = _wait_for(
                lambda: len(listening_worker_pids(stack)) == 2, 30, f"a replacement for {victim}"
            )
        finally:
            stop.set()
            asker.join()
        print(f"replacement serving {took:.2f} s after the kill; {len(answers)} requests meanwhile")
        assert stack.procs["web"].poll() is None  # the server itself never stopped
        assert answers and all(answers), f"{answers.count(False)} of {len(answers)} failed"
        now = web_worker_pids(stack)
        assert now & before == before - {victim}
        assert all(_healthy(stack) for _ in range(10))


def test_granian_survives_its_workers_killed_again_and_again() -> None:
    """Workers killed again right after their replacement trip granian's crash-loop rule
    (it stops the whole server); kms_project.granian_serve starts it again."""
    env = {k: v for k, v in os.environ.items() if k != "KCM_WEB_SERVER"}
    with LiveStack(web_workers=2, env=env) as stack:
        started = time.monotonic()
        for _round in range(3):
            before = web_worker_pids(stack)
            for pid in before:
                os.kill(pid, signal.SIGKILL)
            while True:  # wait for the replacements, then kill those at once
                now = web_worker_pids(stack)
                if len(now) == 2 and not now & before:
                    break
                assert time.monotonic() - started < 60, f"no new workers: {now}"
                time.sleep(0.05)
        killed = time.monotonic()
        while not _healthy(stack):
            assert time.monotonic() - killed < 30, "the node stopped serving"
            time.sleep(0.1)
        print(f"serving again {time.monotonic() - killed:.2f} s after the last kill")
        assert stack.procs["web"].poll() is None
        assert all(_healthy(stack) for _ in range(10))


def test_gunicorn_is_the_alternative() -> None:
    env = {**os.environ, "KCM_WEB_SERVER": "gunicorn"}
    with LiveStack(web_workers=1, env=env) as stack:
        pid = stack.procs["web"].pid
        # kms_project.web exec'd gunicorn in place: the same process, gunicorn's command line.
        assert b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert _healthy(stack)
        assert len(web_worker_pids(stack)) == 1
