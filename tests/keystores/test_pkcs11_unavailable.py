"""When the PKCS#11 keystore cannot serve (a stuck lock, no or a wrong PIN, an unknown token,
a library that does not load), it says so as `keystore_unavailable`, never showing the PIN.
No database is used."""

from __future__ import annotations

import json
import os

import pytest
from django.conf import settings

from apps.keystores.base import KeystoreUnavailable
from apps.keystores.pkcs11 import session as session_module
from apps.keystores.pkcs11.keystore import Pkcs11Keystore
from tests.keystores.keystorekit import AAD, run_python


def test_lock_timeout_makes_the_hsm_unavailable(hsm_key: str) -> None:
    impatient = Pkcs11Keystore(
        library=settings.KCM_PKCS11_LIBRARY,
        token_label=settings.KCM_PKCS11_TOKEN_LABEL,
        pin=settings.KCM_PKCS11_PIN,
        timeout=0.1,
    )
    lock = session_module._process.lock
    with lock:  # another operation is stuck inside the HSM
        with pytest.raises(KeystoreUnavailable) as caught:
            impatient.encrypt(hsm_key, b"payload", AAD)
        assert impatient.health()["ok"] is False

    assert caught.value.code == "keystore_unavailable"
    assert "timed out" in str(caught.value)


def test_missing_pin_names_the_settings_to_set() -> None:
    with pytest.raises(KeystoreUnavailable) as caught:
        Pkcs11Keystore(
            library=settings.KCM_PKCS11_LIBRARY,
            token_label=settings.KCM_PKCS11_TOKEN_LABEL,
            pin=None,
            timeout=1,
        )

    assert "KCM_PKCS11_PIN" in str(caught.value)
    assert "KCM_PKCS11_PIN_FILE" in str(caught.value)


def test_unknown_token_is_unavailable_and_health_says_so() -> None:
    provider = Pkcs11Keystore(
        library=settings.KCM_PKCS11_LIBRARY, token_label="kcm-no-such-token", pin="1", timeout=5
    )

    report = provider.health()

    assert report["ok"] is False
    assert "kcm-no-such-token" in str(report["error"])


def test_unloadable_library_is_unavailable() -> None:
    provider = Pkcs11Keystore(
        library="/nonexistent/libpkcs11.so",
        token_label=settings.KCM_PKCS11_TOKEN_LABEL,
        pin="1",
        timeout=5,
    )

    with pytest.raises(KeystoreUnavailable) as caught:
        provider.exists("00" * 16)

    assert "/nonexistent/libpkcs11.so" in str(caught.value)


def test_wrong_pin_is_unavailable_and_never_shown() -> None:
    wrong_pin = f"wrong-{os.urandom(6).hex()}"

    # A fresh process: login is per process, so this one must not inherit ours.
    result = run_python(
        """
        import json
        from apps.keystores.base import KeystoreUnavailable
        from apps.keystores.registry import platform_keystore

        provider = platform_keystore()
        health = provider.health()
        try:
            provider.create_root_key(label="kcm-test-wrong-pin")
        except KeystoreUnavailable as exc:
            print(json.dumps({"code": exc.code, "message": str(exc), "health": health}))
        """,
        KCM_PKCS11_PIN=wrong_pin,
        KCM_PKCS11_PIN_FILE="",
    )

    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["code"] == "keystore_unavailable"
    assert "PinIncorrect" in outcome["message"]
    assert outcome["health"]["ok"] is False
    assert wrong_pin not in result.stdout + result.stderr
