"""The local stack's SoftHSM2 token survives a process killed while it logged in.

SoftHSM2 rewrites a token's token.object in place at every login, so a kill at that moment
leaves it empty: the token, with every root key in it, no longer reads (seen in CI, a web
worker SIGKILLed during its login). The next start restores the file from the copy the stack
took, and never initialises a new token (with a new PIN file) over an unreadable one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools.kcmstack.hsm import SOFTHSM_LIBRARY, TOKEN_LABEL, prepare_hsm

pytestmark = pytest.mark.skipif(
    not (Path(SOFTHSM_LIBRARY).exists() and shutil.which("softhsm2-util")),
    reason="needs SoftHSM2",
)

_LOGIN = """
import pkcs11, sys
lib = pkcs11.lib(sys.argv[1])
token = lib.get_token(token_label=sys.argv[2])
with token.open(rw=True, user_pin=open(sys.argv[3]).read().strip()) as session:
    session.generate_key(pkcs11.KeyType.AES, 256, store=False)
print("logged in")
"""


def _start(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KCM_", "SOFTHSM2_"))}
    prepare_hsm(env, state)
    return env


def _login(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _LOGIN, env["KCM_PKCS11_LIBRARY"], TOKEN_LABEL,
         env["KCM_PKCS11_PIN_FILE"]],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _token_file(state: Path) -> Path:
    (token,) = (state / "softhsm-tokens").iterdir()
    return token / "token.object"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    (folder / "secrets").mkdir(parents=True)
    return folder


def test_an_emptied_token_file_is_restored_and_the_same_pin_logs_in(state: Path) -> None:
    env = _start(state)
    pin = Path(env["KCM_PKCS11_PIN_FILE"]).read_text()
    assert _login(env).returncode == 0
    _token_file(state).write_bytes(b"")  # what a kill between truncate and write leaves
    refused = _login(env)
    assert refused.returncode != 0  # the token is gone until repaired

    env = _start(state)
    assert Path(env["KCM_PKCS11_PIN_FILE"]).read_text() == pin
    assert len(list((state / "softhsm-tokens").iterdir())) == 1  # no second token
    logged_in = _login(env)
    assert logged_in.returncode == 0, logged_in.stderr


def test_without_a_copy_the_stack_stops_instead_of_replacing_the_token(state: Path) -> None:
    env = _start(state)
    pin = Path(env["KCM_PKCS11_PIN_FILE"]).read_text()
    shutil.rmtree(state / "softhsm-token-backup")
    _token_file(state).write_bytes(b"")

    with pytest.raises(SystemExit, match="cannot be read from it"):
        _start(state)
    assert Path(env["KCM_PKCS11_PIN_FILE"]).read_text() == pin
    assert len(list((state / "softhsm-tokens").iterdir())) == 1
