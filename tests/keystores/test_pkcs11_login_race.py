"""A process that starts while another logs in still reaches its SoftHSM2 token.

SoftHSM2 rewrites the token file at every login and reads its tokens once, at C_Initialize.
A process initialising at that moment saw no token, and retrying the login without
initialising again never found it: a Celery pool process's first login kept failing with
UserPinNotInitialized or NoSuchToken under load. Retries now initialise the library again.
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

REPO = Path(__file__).resolve().parents[2]

# The token file is empty when the library initialises, as while another process rewrites
# it, and whole again 0.1 s later, before the first retry.
_START_DURING_A_REWRITE = """
import shutil, sys, threading, time
from pathlib import Path
from apps.keystores.pkcs11.session import TokenSession

library, label, pin, token_file = sys.argv[1:5]
token_file = Path(token_file)
whole = token_file.read_bytes()
token_file.write_bytes(b"")

def rewritten():
    time.sleep(0.1)
    token_file.write_bytes(whole)

threading.Thread(target=rewritten).start()
session = TokenSession(library=library, token_label=label, pin=pin, timeout=10)
print(len(session.run(lambda s: s.generate_random(256))))
"""


def test_a_login_retried_after_a_token_rewrite_finds_the_token(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "secrets").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KCM_", "SOFTHSM2_"))}
    prepare_hsm(env, state)
    (token,) = (state / "softhsm-tokens").iterdir()
    started = subprocess.run(
        [sys.executable, "-c", _START_DURING_A_REWRITE, env["KCM_PKCS11_LIBRARY"], TOKEN_LABEL,
         Path(env["KCM_PKCS11_PIN_FILE"]).read_text().strip(), str(token / "token.object")],
        env={**env, "PYTHONPATH": str(REPO)}, cwd=REPO, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr[-2000:]
    assert started.stdout.split() == ["32"]
