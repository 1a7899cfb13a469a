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
    backups = state / "softhsm-token-backup"
    _repair_tokens(tokens, backups)
    slots = subprocess.run([util, "--show-slots"], env=env, capture_output=True, text=True)
    if not re.search(rf"Label:\s+{TOKEN_LABEL}\s*$", slots.stdout, re.MULTILINE):
        if any(tokens.iterdir()):
            # Never a new token (and a new PIN file) over one that is there but unreadable:
            # its keys would be lost with its PIN.
            fail(
                f"a SoftHSM2 token is in {tokens} but '{TOKEN_LABEL}' cannot be read from it, "
                "and there is no backup of its token file to restore; move the folder away "
                "(your root keys are in it) or run `make clean-state` to start over"
            )
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
    _back_up_tokens(tokens, backups)
    env.update(
        KCM_HSM_PROVIDER="pkcs11",
        KCM_PKCS11_LIBRARY=library,
        KCM_PKCS11_TOKEN_LABEL=TOKEN_LABEL,
        KCM_PKCS11_PIN_FILE=str(pin_file),
    )


# SoftHSM2 rewrites a token's token.object in place at every login (truncate, then write: its
# flags), so a process killed at that moment leaves it empty, and the token, with every key in
# it, unreadable (seen once in CI: a web worker SIGKILLed while it logged in). The file holds
# the label, serial and the PIN-protected token key, which never change here after
# initialisation: a copy taken while it reads well restores it.
TOKEN_FILE = "token.object"


def _back_up_tokens(tokens: Path, backups: Path) -> None:
    backups.mkdir(mode=0o700, exist_ok=True)
    for token in tokens.iterdir():
        current, copy = token / TOKEN_FILE, backups / f"{token.name}.{TOKEN_FILE}"
        if current.is_file() and current.stat().st_size > 0 and not copy.exists():
            _copy_whole(current, copy)


def _repair_tokens(tokens: Path, backups: Path) -> None:
    for token in tokens.iterdir():
        current, copy = token / TOKEN_FILE, backups / f"{token.name}.{TOKEN_FILE}"
        damaged = not current.is_file() or current.stat().st_size == 0
        if damaged and copy.is_file() and copy.stat().st_size > 0:
            log(f"SoftHSM2 token file {current} was empty (a process killed while it logged "
                "in); restoring it from its backup")  # fmt: skip
            _copy_whole(copy, current)


def _copy_whole(source: Path, target: Path) -> None:
    """Copy `source` over `target` (0600) so that `target` is never seen half-written."""
    partial = target.with_name(f".{target.name}.partial")  # not *.object: SoftHSM2 skips it
    shutil.copyfile(source, partial)
    partial.chmod(0o600)
    partial.replace(target)
