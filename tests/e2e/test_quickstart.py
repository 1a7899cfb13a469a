"""Acceptance test of the quickstart: a fresh clone, the README's `make run`, then Ctrl-C.

It proves what a new user relies on: nothing but the repository and system packages is
needed, the stack is private to the clone (its own PostgreSQL, not the machine's), it becomes
healthy (database, broker, HSM), and Ctrl-C leaves no process behind.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from .stack import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 900  # the first run creates the virtualenv (uv reuses its usual cache)
STOP_TIMEOUT = 20
# Set by `make test` / devstack for this test process; the clone must start without them.
OUTER_ONLY = {"SOFTHSM2_CONF", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV", "MAKEFLAGS",
              "MAKELEVEL", "MFLAGS", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH"}  # fmt: skip


def processes_under(folder: Path) -> dict[int, str]:
    """Live processes whose command line mentions `folder` or whose working directory is in it.

    The second catches PostgreSQL's backends, whose command lines carry no path.
    """
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(entry / "cwd")
        except OSError:  # gone meanwhile, or a zombie
            continue
        if str(folder) in cmdline or f"{cwd}/".startswith(f"{folder}/"):
            found[int(entry.name)] = cmdline.strip()
    return found


def health(port: int) -> dict[str, Any] | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/readyz", headers={"Host": f"localhost:{port}"})
        return dict(json.loads(connection.getresponse().read()))
    except (OSError, ValueError):
        return None
    finally:
        connection.close()


def all_ok(report: dict[str, Any] | None) -> bool:
    checks = (report or {}).get("checks", {})
    return all(checks.get(name) is True for name in ("database", "broker", "hsm"))


def first_make_command(readme: str) -> str:
    blocks = re.findall(r"```[a-z]*\n(.*?)```", readme, re.DOTALL)
    lines = [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return next((line for line in lines if line.startswith("make ")), "")


@pytest.fixture
def clone() -> Iterator[Path]:
    if subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True
    ).returncode:
        pytest.skip("the repository has no commit yet to clone")
    # Not pytest's tmp_path: its parent is 0700 and pytest resets it, while the clone's
    # PostgreSQL (another user) must traverse it. Removed at the end, .venv and all.
    folder = Path(tempfile.mkdtemp(prefix="kcm-quickstart-")) / "kcm"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(folder)], check=True)
    try:
        yield folder
    finally:
        for pid in processes_under(folder):  # only if the test failed: never leave them
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder.parent, ignore_errors=True)


def test_make_run_on_a_fresh_clone_serves_a_healthy_private_stack_until_ctrl_c(
    clone: Path,
) -> None:
    readme = clone / "README.md"
    assert readme.exists(), "README.md is missing: the quickstart starts there"
    assert first_make_command(readme.read_text()) == "make run"
    port = free_port()
    outer_venv = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KCM_") and k not in OUTER_ONLY}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != outer_venv)
    env["KCM_PORT"] = str(port)
    log_path = clone.parent / "make-run.log"

    with open(log_path, "wb") as log:
        # Own process group: SIGINT to the group is what Ctrl-C in a terminal does.
        make = subprocess.Popen(
            ["make", "run"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, process_group=0,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            report = None
            while not all_ok(report := health(port)):
                output = log_path.read_text(errors="replace")[-4000:]
                assert make.poll() is None, f"make run exited ({make.returncode}):\n{output}"
                assert time.monotonic() < deadline, f"not healthy: {report}\n{output}"
                time.sleep(1)

            running = processes_under(clone)
            commands = " ".join(running.values())
            for expected in (
                "postgres",
                "kms_project.web",
                "kms_project worker",
                "kms_project beat",
            ):
                assert expected in commands, f"{expected} not running: {running}"
            # The clone's own PostgreSQL, on a socket inside its .state, is the one in use.
            socket_dir = clone / ".state" / "pg-run"
            assert (socket_dir / ".s.PGSQL.5433").is_socket()
            web = next(pid for pid, cmd in running.items() if "kms_project.web" in cmd)
            web_env = dict(
                item.split("=", 1)
                for item in Path(f"/proc/{web}/environ").read_text().split("\0")
                if "=" in item
            )
            database_url = unquote(web_env["KCM_DATABASE_URL"])
            assert f"host={socket_dir}&" in database_url
            assert "5432" not in database_url and "127.0.0.1" not in database_url

            os.killpg(make.pid, signal.SIGINT)
            make.wait(timeout=60)
            deadline = time.monotonic() + STOP_TIMEOUT
            while (left := processes_under(clone)) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert left == {}, f"left running after Ctrl-C: {left}"
        finally:
            if make.poll() is None:
                os.killpg(make.pid, signal.SIGKILL)
                make.wait()
