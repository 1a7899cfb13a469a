"""A throwaway KCM deployment for end-to-end tests: the real web server (kms_project/web.py:
granian, or gunicorn with KCM_WEB_SERVER=gunicorn), real Celery, own database.

    with LiveStack(web_workers=2, celery_pool="solo") as stack:
        stack.manage("kcm_demo")
        status, headers, body = stack.request("GET", "/healthz", host="localhost")

It runs against the PostgreSQL server that KCM_DATABASE_URL names (under `make test`, the
devstack's), in a scratch database `kcm_e2e_<random>` that `stop()` drops. The Celery worker
gets a private filesystem broker, so concurrent stacks never share queues.

Its servers run in sessions of their own (so a terminal's Ctrl-C does not hit them halfway),
which is why nothing else would stop them if the process that started them died: while a stack
runs, SIGTERM and SIGHUP stop every live stack and then end the process by the same signal, and
Ctrl-C (KeyboardInterrupt) unwinds through `stop()` as usual. A signal that arrives while a
process is being started or the stacks are being stopped waits until that is done.
"""

from __future__ import annotations

import contextlib
import http.client
import json as jsonlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any, cast
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from kms_project.env import database_from_url

REPO = Path(__file__).resolve().parents[2]
_STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class _Signals:
    """Stops every live stack when the process is told to stop (see the module docstring)."""

    live: set[LiveStack] = set()
    busy = 0  # > 0 while a stack starts a process or stops: signals then wait
    pending: list[int] = []
    previous: dict[int, Any] = {}
    owner = 0  # the process whose stacks these are

    @classmethod
    def register(cls, stack: LiveStack) -> None:
        cls.owner = os.getpid()
        # Only the main thread may set handlers; a handler someone else installed is theirs.
        if not cls.live and threading.current_thread() is threading.main_thread():
            for signum in _STOPPING_SIGNALS:
                handler = signal.getsignal(signum)
                if handler in (signal.SIG_DFL, signal.default_int_handler):
                    cls.previous[signum] = handler
                    signal.signal(signum, cls.on_signal)
        cls.live.add(stack)

    @classmethod
    def unregister(cls, stack: LiveStack) -> None:
        cls.live.discard(stack)
        if not cls.live:
            for signum, handler in cls.previous.items():
                signal.signal(signum, handler)
            cls.previous.clear()

    @classmethod
    def on_signal(cls, signum: int, frame: object) -> None:
        if os.getpid() != cls.owner:
            # A process forked from the owner (a bench's client process, told to stop by its
            # pool): it dies of the signal; the stacks are not its to stop.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if cls.busy:
            cls.pending.append(signum)
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        for stack in list(cls.live):
            stack.stop()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # die of it, as if we had never caught it

    @classmethod
    @contextlib.contextmanager
    def deferred(cls) -> Iterator[None]:
        """Signals wait until the block is done (a process started is also recorded)."""
        cls.busy += 1
        try:
            yield
        finally:
            cls.busy -= 1
        if not cls.busy and cls.pending:
            signum = cls.pending.pop(0)
            cls.pending.clear()
            cls.on_signal(signum, None)


# For a stack under load from one token and one address, as fast as it answers: the rate limits
# (500/s per token and process by default) raised out of the way, so that the requests a test or
# bench watches are not refused by them (their code still runs on every request).
RATE_LIMITS_AWAY = {"KCM_API_RATE_PER_TOKEN": "1000000/s", "KCM_API_RATE_PER_ADDRESS": "1000000/s"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LiveStack:
    def __init__(
        self,
        *,
        web_workers: int = 2,
        celery_pool: str | None = None,  # None (no worker), "solo" or "prefork"
        celery_concurrency: int = 2,
        env: dict[str, str] | None = None,
        startup_timeout: float = 90.0,
    ) -> None:
        self.web_workers = web_workers
        self.celery_pool = celery_pool
        self.celery_concurrency = celery_concurrency
        self.startup_timeout = startup_timeout
        self.base_env = dict(os.environ if env is None else env)
        self.database = f"kcm_e2e_{secrets.token_hex(4)}"
        self.port = 0
        self.env: dict[str, str] = {}
        self.tmp: Path | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}
        self._created_database = False

    # --- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> LiveStack:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> LiveStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        _Signals.register(self)
        self.tmp = Path(tempfile.mkdtemp(prefix="kcm-e2e-"))
        state = self.tmp / "state"
        for folder in ("queue", "processed"):
            (state / "broker" / folder).mkdir(parents=True)
        self.env = dict(self.base_env)
        self.env.pop("KCM_BROKER_URL", None)  # the filesystem broker under our own state dir
        self.env.update(
            KCM_DATABASE_URL=self._database_url(self.database),
            KCM_STATE_DIR=str(state),
            DJANGO_SETTINGS_MODULE="kms_project.settings",
        )
        self._create_database()
        self.manage("kcm_migrate")

        self.port = free_port()
        python = sys.executable
        self._spawn(
            "web",
            [python, "-m", "kms_project.web", "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(self.web_workers)],
        )  # fmt: skip
        if self.celery_pool:
            self._spawn(
                "worker",
                [python, "-m", "celery", "-A", "kms_project", "worker", "-l", "info",
                 "--pool", self.celery_pool, "--concurrency", str(self.celery_concurrency),
                 "-I", "tests.e2e.probe_tasks"],
            )  # fmt: skip
        self._wait_healthy()
        if self.celery_pool:
            self.wait_for_log("worker", "ready.")

    def stop(self) -> None:
        """Stop every process (whole process groups) and drop the database; idempotent."""
        with _Signals.deferred():
            self._stop()
        _Signals.unregister(self)

    def _stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # also stragglers left in the group
            proc.wait()
        self.procs.clear()
        for handle in self._logs.values():
            handle.close()
        self._logs.clear()
        if self._created_database:
            with self._admin_connection() as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(self.database)
                    )
                )
            self._created_database = False
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    # --- use -----------------------------------------------------------------------------------

    def manage(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run `manage.py <args>` against this stack's database."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(
                f"manage.py {' '.join(args)} exited with {result.returncode}\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def request(
        self,
        method: str,
        path: str,
        host: str = "demo.localhost",
        json: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
        data: bytes | None = None,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """Send one request to 127.0.0.1 with `Host: <host>:<port>`.

        Python cannot resolve *.localhost, so the tenant is chosen by the Host header alone.
        The headers returned are case-insensitive (`headers["content-type"]`,
        `headers.get_all("set-cookie")`).
        """
        all_headers = {"Host": f"{host}:{self.port}", **(headers or {})}
        body = data  # sent as it is (say, a malformed body)
        if json is not None:
            body = jsonlib.dumps(json).encode()
            all_headers.setdefault("Content-Type", "application/json")
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=all_headers)
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()

    def log(self, name: str) -> str:
        """Everything process `name` ("web" or "worker") has written so far."""
        assert self.tmp is not None
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def wait_for_log(self, name: str, text: str, timeout: float | None = None) -> None:
        self._wait(lambda: text in self.log(name), timeout, f"{name} to log {text!r}")

    # --- internals -----------------------------------------------------------------------------

    def _database_url(self, name: str) -> str:
        parts = urlsplit(self.base_env["KCM_DATABASE_URL"])
        return urlunsplit(parts._replace(path=f"/{name}"))

    def _admin_connection(self) -> psycopg.Connection[Any]:
        """Autocommit connection to the server's `postgres` database (CREATE/DROP DATABASE)."""
        db = database_from_url(self.base_env["KCM_DATABASE_URL"])
        params = {key.lower(): str(db[key]) for key in ("HOST", "PORT", "USER", "PASSWORD")}
        params.update(dbname="postgres", **cast(dict[str, str], db["OPTIONS"]))
        conninfo = make_conninfo(**{key: value for key, value in params.items() if value})
        return psycopg.connect(conninfo, autocommit=True)

    def _create_database(self) -> None:
        with self._admin_connection() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        self._created_database = True

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        """Start `cmd` as process `name`, with the stack's environment (and `env` on top)."""
        assert self.tmp is not None
        log = self._logs[name] = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115
        # Own process group, so stop() can signal the web server's and Celery's children too.
        with _Signals.deferred():
            self.procs[name] = subprocess.Popen(
                cmd, cwd=REPO, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def _wait_healthy(self) -> None:
        last: list[str] = ["no answer"]
        domain = self.env.get("KCM_BASE_DOMAIN", "localhost")

        def healthy() -> bool:
            try:
                status, _, body = self.request("GET", "/readyz", host=domain, timeout=5)
            except OSError as exc:
                last[0] = repr(exc)
                return False
            last[0] = f"{status} {body[:500]!r}"
            return status == 200

        self._wait(healthy, None, "GET /readyz to answer 200", lambda: last[0])

    def _wait(
        self,
        ready: Callable[[], bool],
        timeout: float | None,
        what: str,
        detail: Callable[[], str] | None = None,
    ) -> None:
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        while not ready():
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(
                        f"{name} exited ({proc.returncode}) while waiting for {what}:\n"
                        f"{self.log(name)[-3000:]}"
                    )
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}\n{self.log(n)[-2000:]}" for n in self.procs)
                extra = f" (last: {detail()})" if detail else ""
                raise AssertionError(f"timed out waiting for {what}{extra}\n{logs}")
            time.sleep(0.2)
