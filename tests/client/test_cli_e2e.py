"""The `kcm` command line run as a user runs it: a subprocess with its own config folder,
against a live KCM."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.tenantkit import KEY_ADMIN, KEY_USER, call

from .conftest import AUDITOR, Kcm

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
# The console script `make venv` installs (client/pyproject.toml); PYTHONPATH below makes it run
# this checkout's kcm_client.
KCM = Path(sys.executable).with_name("kcm")
COMMANDS = [
    [], ["login"], ["encrypt"], ["decrypt"], ["header"], ["keys"], ["keys", "list"],
    ["keys", "create"], ["keys", "rotate"], ["keys", "disable"], ["keys", "enable"], ["jobs"],
    ["jobs", "watch"], ["audit"], ["audit", "export"], ["audit", "verify"],
]  # fmt: skip


class User:
    """One person's shell: a home with a kcm config, and a token file."""

    def __init__(self, home: Path, kcm: Kcm, token: str) -> None:
        self.home, self.kcm = home, kcm
        self.env = {
            "PATH": os.environ["PATH"], "HOME": str(home), "KCM_CONFIG_DIR": str(home / "kcm"),
            "PYTHONPATH": str(REPO / "client"), "COLUMNS": "100", "LINES": "40", "LANG": "C.UTF-8",
        }  # fmt: skip
        self.token_file = home / "token"
        self.token_file.write_text(token + "\n")
        self.token_file.chmod(0o600)

    def run(
        self, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        assert KCM.exists(), f"{KCM} is missing: run `make venv`"
        return subprocess.run(
            [str(KCM), *args], input=stdin, capture_output=True,
            env={**self.env, **(env or {})}, cwd=self.home, timeout=300, check=False,
        )  # fmt: skip

    def json(self, *args: str) -> Any:
        done = self.run(*args, "--json")
        assert done.returncode == 0, done.stderr.decode()
        return json.loads(done.stdout)

    def login(self) -> None:
        host = self.kcm.host(self.kcm.acme)
        done = self.run("login", "--url", self.kcm.url, "--host", host,
                        "--token-file", str(self.token_file))  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()


@pytest.fixture
def user(kcm: Kcm, tmp_path: Path) -> User:
    person = User(tmp_path, kcm, kcm.acme.tokens[KEY_USER])
    person.login()
    return person


@pytest.fixture
def admin(kcm: Kcm, tmp_path: Path) -> User:
    (tmp_path / "admin").mkdir()
    person = User(tmp_path / "admin", kcm, kcm.acme.tokens[KEY_ADMIN])
    person.login()
    return person


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "kcm")
def test_every_command_has_help(user: User, command: list[str]) -> None:
    done = user.run(*command, "--help")
    assert done.returncode == 0, done.stderr.decode()
    assert b"Usage: kcm" in done.stdout
    if (command and command[0] not in ("keys", "jobs", "audit")) or len(command) == 2:
        assert b"--json" in done.stdout


def test_python_m_kcm_client_is_the_same_command_line(user: User) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kcm_client", "header", "--help"], capture_output=True,
        env=user.env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout == user.run("header", "--help").stdout


def test_files_and_pipes_round_trip(user: User) -> None:
    plain = user.home / "report.csv"
    plain.write_bytes(b"name,amount\nacme,42\n" * 5000)
    done = user.run(
        "encrypt", str(plain), "-o", "report.kcm", "-k", "payments", "-c", "file=report"
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"name,amount" not in (user.home / "report.kcm").read_bytes()
    header = user.json("header", "report.kcm")
    assert header["service_key"] == "payments" and header["context"] == {"file": "report"}
    done = user.run("decrypt", "report.kcm", "-o", "back.csv", "-c", "file=report")
    assert done.returncode == 0, done.stderr.decode()
    assert (user.home / "back.csv").read_bytes() == plain.read_bytes()
    piped = user.run("encrypt", "-k", "payments", stdin=b"through a pipe")
    assert piped.returncode == 0, piped.stderr.decode()
    back = user.run("decrypt", stdin=piped.stdout)
    assert (back.returncode, back.stdout) == (0, b"through a pipe")


def test_a_changed_message_exits_4_and_leaves_no_output(user: User) -> None:
    message = user.run("encrypt", "-k", "payments", stdin=b"x" * 100_000).stdout
    (user.home / "bad.kcm").write_bytes(message[:-1] + bytes([message[-1] ^ 1]))
    done = user.run("decrypt", "bad.kcm", "-o", "out.bin")
    assert done.returncode == 4
    assert b"message_frame_invalid" in done.stderr and b"Traceback" not in done.stderr
    assert not (user.home / "out.bin").exists()
    wrong = user.run("decrypt", "-c", "file=other", stdin=message)
    assert wrong.returncode == 4 and b"context_mismatch" in wrong.stderr


def test_a_wrong_token_is_a_clear_message_and_exit_3(user: User) -> None:
    done = user.run("keys", "list", env={"KCM_TOKEN": "kcm_0000_not-a-real-token"})
    assert done.returncode == 3
    assert b"token was refused" in done.stderr
    assert b"Traceback" not in done.stderr + done.stdout
    as_json = user.run("encrypt", "-k", "payments", "--json",
                       env={"KCM_TOKEN": "kcm_0000_not-a-real-token"}, stdin=b"x")  # fmt: skip
    assert as_json.returncode == 3
    assert json.loads(as_json.stdout)["error"]["code"] in ("invalid_token", "authentication_failed")


def test_a_token_file_others_can_read_is_refused(user: User) -> None:
    user.token_file.chmod(0o644)
    done = user.run("keys", "list")
    assert done.returncode == 6
    assert b"chmod 600" in done.stderr and b"Traceback" not in done.stderr


def test_no_profile_is_a_clear_message(user: User) -> None:
    done = user.run("--profile", "nowhere", "keys", "list")
    assert done.returncode == 6 and b"kcm login" in done.stderr


def test_keys_rotate_disable_and_jobs_watch(kcm: Kcm, admin: User) -> None:
    made = admin.json("keys", "create", "ledger")
    assert made["name"] == "ledger"
    names = [k["name"] for k in admin.json("keys", "list")]
    assert "ledger" in names
    rotated = admin.json("keys", "rotate", kcm.l1_id)
    assert rotated["id"] == kcm.l1_id
    jobs = call(kcm.stack, kcm.acme, KEY_ADMIN, "GET", f"/api/v1/rotation/jobs/?key_id={kcm.l1_id}")
    job_id = jobs.body["results"][0]["id"]
    watched = admin.json("jobs", "watch", job_id, "--interval", "0.2", "--timeout", "120")
    assert watched["state"] == "succeeded"
    ledger = made["id"]
    assert admin.json("keys", "disable", ledger)["state"] == "DISABLED"
    assert admin.json("keys", "enable", ledger)["state"] == "ENABLED"


def test_audit_verify_and_export(kcm: Kcm, tmp_path: Path) -> None:
    auditor = User(tmp_path, kcm, kcm.acme.tokens[AUDITOR])
    auditor.login()
    assert auditor.json("audit", "verify")["ok"] is True
    exported = auditor.json("audit", "export", "-o", "log.jsonl", "--wait", "120")
    assert exported["state"] == "succeeded"
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert lines and json.loads(lines[0])
    assert json.loads((tmp_path / "log.jsonl.manifest.json").read_text())


def test_a_large_input_shows_a_progress_bar_on_a_terminal(user: User) -> None:
    big = user.home / "big.bin"
    big.write_bytes(os.urandom(1 << 20) * 24)  # 24 MiB: over the 8 MiB threshold
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {k: v for k, v in user.env.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(
        [str(KCM), "encrypt", str(big), "-o", "big.kcm", "-k", "payments"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=terminal, env={**env, "TERM": "xterm"},
        cwd=user.home,
    )  # fmt: skip
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    assert proc.wait(timeout=300) == 0, shown.decode(errors="replace")
    os.close(controller)
    assert b"encrypt" in shown and b"MB" in shown  # rich's bar with a download column
