"""`run`: web + worker + beat, each in its own process group, their output interleaved."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from .common import REPO, STOP, log

STOP_TIMEOUT = 10.0


def start_process(
    name: str, cmd: list[str], env: dict[str, str], out_lock: threading.Lock
) -> subprocess.Popen[bytes]:
    # Own process group: Ctrl-C reaches only us, and we stop each group as a whole
    # (web workers, celery pool children) at the end.
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, process_group=0,
    )  # fmt: skip

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            with out_lock:
                sys.stdout.write(f"{name:<6} | {raw.decode(errors='replace')}")
                sys.stdout.flush()

    threading.Thread(target=pump, daemon=True).start()
    return proc


def stop_processes(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    # SIGTERM to the leaders: the web server's main process and Celery's stop their own
    # children in order (signalling the children directly makes Celery log errors).
    for proc in procs.values():
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for name, proc in procs.items():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"{name} did not stop within {STOP_TIMEOUT:.0f} s; killing it")
    for proc in procs.values():
        # Also reaches children left in the group after their leader exited.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def web_answers(port: str, host: str) -> int | None:
    connection = http.client.HTTPConnection("127.0.0.1", int(port), timeout=2)
    try:
        connection.request("GET", "/readyz", headers={"Host": f"{host}:{port}"})
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def port_is_free(port: str) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", int(port)))
        except OSError:
            return False
    return True


def serve(env: dict[str, str]) -> int:
    port, domain = env.get("KCM_PORT", "8000"), env.get("KCM_BASE_DOMAIN", "localhost")
    python = sys.executable
    worker_env = dict(env)
    # As root Celery warns at length on every start; the worker accepts JSON only, so the
    # risk the warning is about (unpickling) does not apply. Say it once, briefly, instead.
    if os.geteuid() == 0:
        log("running as root; Celery's superuser warning is silenced (JSON-only tasks)")
        worker_env["PYTHONWARNINGS"] = "ignore:You're running the worker with superuser"
    commands = {
        # granian (or KCM_WEB_SERVER=gunicorn), workers, threads, no preloading: kms_project/web.py.
        "web": ([python, "-m", "kms_project.web", "--bind", f"127.0.0.1:{port}"], env),
        "worker": ([python, "-m", "celery", "-A", "kms_project", "worker", "-l", "info",
                    "--concurrency", "2"], worker_env),
        "beat": ([python, "-m", "celery", "-A", "kms_project", "beat", "-l", "info"], env),
    }  # fmt: skip
    out_lock = threading.Lock()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    announced = False
    try:
        for name, (cmd, proc_env) in commands.items():
            procs[name] = start_process(name, cmd, proc_env, out_lock)
        while not STOP.is_set():
            for name, proc in procs.items():
                if proc.poll() is not None:
                    log(f"{name} exited unexpectedly (code {proc.returncode}); stopping the rest")
                    return 1
            if not announced and (status := web_answers(port, domain)) is not None:
                announced = True
                with out_lock:
                    print(
                        f"\n  KCM is running (GET /readyz: {status}).\n"
                        f"    demo tenant:      http://demo.{domain}:{port}/\n"
                        f"    platform console: http://{domain}:{port}/\n"
                        "  Press Ctrl-C to stop.\n",
                        flush=True,
                    )
            time.sleep(0.5)
        log("stopping web, worker and beat")
        return 0
    finally:
        stop_processes(procs)
