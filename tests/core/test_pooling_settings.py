"""KCM_DATABASE_POOLING: behind a transaction pooler the settings pick the pooled backend and
insist on a direct URL for the session-bound connections (LISTEN, rewrap locks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRINT = (
    "from django.conf import settings as s; d = s.DATABASES['default']; "
    "print(d['ENGINE'], d['DISABLE_SERVER_SIDE_CURSORS'], (s.KCM_DATABASE_DIRECT or {}).get('PORT'))"
)


def _settings(**env: str) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "kms_project.settings",
        "KCM_DATABASE_URL": "postgres://kcm@pgbouncer:6432/kcm",
        **env,
    }
    if "KCM_DATABASE_DIRECT_URL" not in env:
        full.pop("KCM_DATABASE_DIRECT_URL", None)
    code = f"import django; django.setup(); {PRINT}"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=full, capture_output=True, text=True
    )


def test_it_uses_the_pooled_backend_and_the_direct_url_in_transaction_mode() -> None:
    done = _settings(
        KCM_DATABASE_POOLING="transaction",
        KCM_DATABASE_DIRECT_URL="postgres://kcm@postgres:5432/kcm",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["apps.core.pooling", "True", "5432"]


def test_it_refuses_transaction_mode_without_a_direct_url() -> None:
    done = _settings(KCM_DATABASE_POOLING="transaction")
    assert done.returncode != 0
    assert "KCM_DATABASE_POOLING=transaction needs KCM_DATABASE_DIRECT_URL" in done.stderr


def test_it_refuses_an_unknown_pooling_mode() -> None:
    done = _settings(KCM_DATABASE_POOLING="statement")
    assert done.returncode != 0
    assert "KCM_DATABASE_POOLING" in done.stderr


def test_a_direct_connection_by_default() -> None:
    done = _settings()
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["django_tenants.postgresql_backend", "False", "None"]
