"""What a PKCS#11 token can do comes from its mechanism list, and a platform keystore without a
mechanism KCM needs is refused at start and by the readiness check, naming the mechanism.

SoftHSM2 has every mechanism KCM needs; "another vendor's token that lacks CKM_AES_GCM" is
played by the same real token whose reported mechanism list is cut down (the only thing that
cannot be run here is that other vendor's library).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pkcs11 import Mechanism

from apps.keystores import registry
from apps.keystores.base import (
    CAP_CREATE,
    CAP_SIGN,
    CAP_SYNC,
    CAP_WRAP,
    CapabilityNotSupported,
)
from apps.keystores.pkcs11.keystore import Pkcs11Keystore
from kms_project import granian_serve, gunicorn_conf


@pytest.fixture
def token_without_gcm(monkeypatch: pytest.MonkeyPatch) -> Iterator[Pkcs11Keystore]:
    """The process's platform keystore, on a token that does not list CKM_AES_GCM."""
    registry.reset_platform_keystore()
    keystore = registry.platform_keystore()
    assert isinstance(keystore, Pkcs11Keystore)
    assert keystore.supports(CAP_WRAP)  # reads the real list first
    real = keystore.session.mechanisms
    assert real is not None and Mechanism.AES_GCM in real
    monkeypatch.setattr(keystore.session, "mechanisms", real - {Mechanism.AES_GCM})
    yield keystore
    registry.reset_platform_keystore()


def test_softhsm_offers_what_kcm_needs_and_no_state_sync() -> None:
    keystore = Pkcs11Keystore.from_settings()

    for capability in (CAP_WRAP, CAP_CREATE, CAP_SIGN, "import:RSAES_OAEP_SHA_1"):
        assert keystore.supports(capability), capability
    assert not keystore.supports(CAP_SYNC)  # only a customer's key manager reports state
    keystore.require(*registry.PLATFORM_CAPABILITIES)


def test_a_token_without_aes_gcm_cannot_wrap_and_says_which_mechanism_is_missing(
    token_without_gcm: Pkcs11Keystore,
) -> None:
    assert not token_without_gcm.supports(CAP_WRAP)
    assert token_without_gcm.supports(CAP_CREATE)

    with pytest.raises(CapabilityNotSupported) as refused:
        token_without_gcm.require(*registry.PLATFORM_CAPABILITIES)
    assert "wrap" in str(refused.value)
    assert "CKM_AES_GCM" in str(refused.value)


def test_the_readiness_check_is_not_ok_for_such_a_token(
    token_without_gcm: Pkcs11Keystore,
) -> None:
    report = registry.platform_keystore_health()

    assert report["ok"] is False
    assert "CKM_AES_GCM" in str(report["error"])


def test_a_web_worker_refuses_to_start_on_such_a_token(
    token_without_gcm: Pkcs11Keystore, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(CapabilityNotSupported):
        registry.platform_keystore_check()

    # gunicorn's hook exits with "worker failed to boot", which stops the whole server.
    with pytest.raises(SystemExit) as stopped:
        gunicorn_conf.post_worker_init(object())
    assert stopped.value.code == 3
    assert "CKM_AES_GCM" in capsys.readouterr().err

    # granian's worker factory ends the worker with status 3; a second failure within seconds
    # stops the server (tests/e2e/test_web_server.py runs that for real).
    with pytest.raises(SystemExit) as stopped:
        granian_serve.worker_application()
    assert stopped.value.code == 3
    assert "CKM_AES_GCM" in capsys.readouterr().err


def test_a_complete_token_passes_the_start_check() -> None:
    registry.reset_platform_keystore()
    registry.platform_keystore_check()  # does not raise
    assert registry.platform_keystore_health()["ok"] is True
