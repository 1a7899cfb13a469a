"""A throwaway PgBouncer (Debian's `pgbouncer`) in transaction-pooling mode in front of the
PostgreSQL server that a database URL names, for the tests that run KCM through a pooler.

    with PgBouncer(direct_url, pool_size=4) as bouncer:
        bouncer.url("kcm_e2e_1234")   # postgres://...@127.0.0.1:<port>/kcm_e2e_1234

It listens on 127.0.0.1 on a free port, with its files in a temporary folder. As root it runs
as the user that owns PostgreSQL's socket folder (PgBouncer refuses to run as root, and the
project's PostgreSQL only lets that user in through its socket).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

from kms_project.env import database_from_url


def pgbouncer_binary() -> str:
    """The pgbouncer executable (Debian puts it in /usr/sbin, which a user's PATH may lack);
    tools/install-system-deps installs it."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/sbin")
    if found is None:
        raise RuntimeError("pgbouncer is not installed: run tools/install-system-deps")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PgBouncer:
    def __init__(self, direct_url: str, *, pool_size: int = 4, max_clients: int = 400) -> None:
        self.direct_url = direct_url
        self.pool_size = pool_size
        self.max_clients = max_clients
        self.port = 0
        self.tmp: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PgBouncer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def url(self, database: str) -> str:
        """KCM_DATABASE_URL for `database` through this PgBouncer."""
        parts = urlsplit(self.direct_url)
        user = parts.username or "postgres"
        return f"postgres://{user}@127.0.0.1:{self.port}/{database}"

    def direct(self, database: str) -> str:
        """KCM_DATABASE_DIRECT_URL for `database` (straight to PostgreSQL)."""
        return urlunsplit(urlsplit(self.direct_url)._replace(path=f"/{database}"))

    def start(self) -> None:
        db = database_from_url(self.direct_url)
        host, port = str(db["HOST"]), str(db["PORT"] or 5432)
        user = str(db["USER"] or "postgres")
        self.tmp = Path(tempfile.mkdtemp(prefix="kcm-pgbouncer-"))
        self.port = _free_port()
        (self.tmp / "userlist.txt").write_text(f'"{user}" ""\n')
        (self.tmp / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={host} port={port}\n"
            "[pgbouncer]\n"
            "pool_mode = transaction\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.tmp / 'userlist.txt'}\n"
            f"default_pool_size = {self.pool_size}\n"
            "min_pool_size = 0\n"
            "reserve_pool_size = 0\n"
            f"max_client_conn = {self.max_clients}\n"
            f"max_db_connections = {self.pool_size}\n"
            f"logfile = {self.tmp / 'pgbouncer.log'}\n"
            f"pidfile = {self.tmp / 'pgbouncer.pid'}\n"
            "ignore_startup_parameters = extra_float_digits\n"
            "server_reset_query =\n"
            "log_connections = 0\n"
            "log_disconnections = 0\n"
        )
        command = [pgbouncer_binary()]
        if os.geteuid() == 0:
            owner = pwd.getpwuid(os.stat(host).st_uid if host.startswith("/") else 0).pw_name
            if owner == "root":
                owner = "nobody"
            shutil.chown(self.tmp, owner)
            for child in self.tmp.iterdir():
                shutil.chown(child, owner)
            command += ["-u", owner]
        command.append(str(self.tmp / "pgbouncer.ini"))
        self.proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not start:\n{self.log()[-2000:]}")
            time.sleep(0.05)

    def log(self) -> str:
        if self.tmp is None or not (self.tmp / "pgbouncer.log").exists():
            return ""
        return (self.tmp / "pgbouncer.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
