"""The state folder and its secret key, and the bootstrap that fills in the rest of the
environment: whatever it leaves unset (database, broker folders, HSM) is made here."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

from .common import REPO, log, run_quiet, stop_if_requested, write_secret
from .hsm import prepare_hsm
from .postgres import Postgres, use_postgres


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


@contextlib.contextmanager
def state_lock(state: Path) -> Iterator[None]:
    """Serialise bootstraps of one state folder (two terminals starting at once)."""
    with open(state / "devstack.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


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
