"""What every part of the stack shares: the stop flag, logging, bootstrap steps, secret files."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
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
