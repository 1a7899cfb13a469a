"""The HSM of the local stack: a SoftHSM2 token under the state folder, or, without SoftHSM2,
the software key provider (with a warning no one can miss)."""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from .common import fail, log, run_quiet, write_secret

SOFTHSM_LIBRARY = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN_LABEL = "kcm"

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
