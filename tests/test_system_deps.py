"""`make test` on a machine without SoftHSM2: it installs it when it can, or stops at once with
one line saying what to install (it once ran on and failed with 89 errors).

Nothing is uninstalled: each test runs the real script (and make) with a PATH that mirrors
this machine's minus the commands a fresh machine would lack.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tools" / "install-system-deps"


def _path_without(tmp_path: Path, *commands: str) -> str:
    """A PATH of one folder linking every command on this machine's PATH but `commands`."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            link = folder / name
            target = os.path.join(directory, name)
            if name in commands or link.exists() or not os.access(target, os.X_OK):
                continue
            link.symlink_to(target)
    return str(folder)


def _run(cmd: list[str], path: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_it_passes_silently_when_everything_is_installed() -> None:
    result = _run([str(SCRIPT), "--check"], os.environ["PATH"])
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr


def test_it_names_softhsm2_in_one_line_when_it_cannot_install(tmp_path: Path) -> None:
    # No apt-get on PATH: nothing to install with, as on a machine without root or sudo.
    path = _path_without(tmp_path, "softhsm2-util", "apt-get")
    result = _run([str(SCRIPT)], path)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == "error: make test needs softhsm2: sudo apt-get install softhsm2"


def test_check_never_installs(tmp_path: Path) -> None:
    # apt-get is there and we may be root: --check must still only report.
    path = _path_without(tmp_path, "softhsm2-util", "chromedriver")
    result = _run([str(SCRIPT), "--check"], path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: make test needs softhsm2: sudo apt-get install softhsm2 "
        "(and, for the browser and token tests, chromium-driver)"
    ]


def test_make_test_stops_at_once_without_softhsm2(tmp_path: Path) -> None:
    path = _path_without(tmp_path, "softhsm2-util", "apt-get")
    began = time.monotonic()
    result = _run(["make", "--no-print-directory", "test"], path)
    assert result.returncode != 0
    assert time.monotonic() - began < 10  # no virtualenv sync, no pytest, no lint
    assert "error: make test needs softhsm2: sudo apt-get install softhsm2" in result.stderr
    assert "pytest" not in result.stdout + result.stderr
    assert "ruff" not in result.stdout + result.stderr


def test_it_installs_with_apt_get_when_it_may(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("installing needs root here (passwordless sudo is not probed by this test)")
    path = _path_without(tmp_path, "softhsm2-util", "apt-get")
    # A stand-in apt-get that notes what it was asked, says it did it, and installs nothing:
    # the script must look again rather than trust it.
    calls = tmp_path / "apt-calls"
    fake = Path(path) / "apt-get"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 0\n')
    fake.chmod(0o755)
    result = _run([str(SCRIPT)], path)
    assert calls.read_text().splitlines() == [
        "update -qq",
        "install -y -qq --no-install-recommends softhsm2",
    ]
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "error: make test needs softhsm2: sudo apt-get install softhsm2"
    )
