"""Run KCM locally with nothing but the repository: `make run`, `make test`, `make bench`.

    python tools/devstack.py run            bootstrap, then web + worker + beat until Ctrl-C
    python tools/devstack.py exec -- CMD    bootstrap, run CMD, exit with its code
    python tools/devstack.py env            bootstrap, print `export K=V` lines for a shell
    python tools/devstack.py stop           stop the project-local PostgreSQL, if running

Bootstrap fills in whatever the environment leaves unset: a secret key, a project-local
PostgreSQL (Unix socket only), the filesystem broker folders and a SoftHSM2 token, all
under KCM_STATE_DIR (default .state/). Anything already configured is used as it is.
Standard library only: it runs before (and without) the virtualenv's packages.
This file is the command line; the stack's parts are the modules of tools/kcmstack/.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

# Run as a script, only tools/ is on the path: the stack's parts are imported as the package
# tools.kcmstack, from the repository's root, as they are everywhere else.
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tools.kcmstack.bootstrap import bootstrap  # noqa: E402
from tools.kcmstack.common import REPO, fail, request_stop, run_quiet  # noqa: E402
from tools.kcmstack.postgres import Postgres  # noqa: E402
from tools.kcmstack.processes import port_is_free, serve  # noqa: E402


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
