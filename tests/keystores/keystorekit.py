"""What the keystore tests share: the AAD they bind ciphertexts to, and a fresh interpreter
for what must not happen in pytest's own process (a login, a crash)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from django.conf import settings

AAD = b'{"tenant":"acme","key":"tk_1","version":1,"parent":"ck_1@1"}'


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter, so that a crash or a login fails only that process."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=settings.BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "kms_project.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
