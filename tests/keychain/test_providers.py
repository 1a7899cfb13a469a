"""L1 root-key providers: the PKCS#11 one on real SoftHSM2 (no mocks) and the software one.

The token comes from the environment (SOFTHSM2_CONF, KCM_PKCS11_TOKEN_LABEL, KCM_PKCS11_PIN or
KCM_PKCS11_PIN_FILE). No database is used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from django.conf import settings
from pkcs11 import Attribute, KeyType, ObjectClass
from pytest_django import Settings

from apps.keystores.base import (
    CAP_CREATE,
    CAP_DESTROY,
    CAP_WRAP,
    Keystore,
    KeystoreUnavailable,
    RootKeyIntegrityError,
    RootKeyNotFound,
)
from apps.keystores.pkcs11 import aes as aes_module
from apps.keystores.pkcs11 import session as session_module
from apps.keystores.pkcs11.keystore import Pkcs11Keystore
from apps.keystores.registry import platform_keystore, reset_platform_keystore
from apps.keystores.software import SoftwareKeystore

AAD = b'{"tenant":"acme","key":"tk_1","version":1,"parent":"ck_1@1"}'


@pytest.fixture(scope="module")
def hsm() -> Pkcs11Keystore:
    return Pkcs11Keystore.from_settings()


@pytest.fixture(params=["pkcs11", "software"])
def provider(request: pytest.FixtureRequest, hsm: Pkcs11Keystore, tmp_path: Path) -> Keystore:
    if request.param == "pkcs11":
        return hsm
    return SoftwareKeystore(path=tmp_path / "keys.json", allowed=True)


@pytest.fixture
def root_key(provider: Keystore) -> Iterator[str]:
    handle = provider.create_root_key(label="kcm-test-provider")
    yield handle
    if provider.exists(handle):
        provider.destroy(handle)


@pytest.fixture
def hsm_key(hsm: Pkcs11Keystore) -> Iterator[str]:
    handle = hsm.create_root_key(label="kcm-test-provider")
    yield handle
    if hsm.exists(handle):
        hsm.destroy(handle)


@pytest.fixture
def token_session(hsm: Pkcs11Keystore) -> Iterator[pkcs11.Session]:
    """A second session on the token, as another HSM client in this process would open."""
    assert hsm.health()["ok"]  # logs the process in; the new session inherits the login
    lib = pkcs11.lib(settings.KCM_PKCS11_LIBRARY)
    session = lib.get_token(token_label=settings.KCM_PKCS11_TOKEN_LABEL).open(rw=True)
    yield session
    # A key the keystore did not find makes it re-initialise the library, which ends this session.
    with contextlib.suppress(pkcs11.exceptions.SessionHandleInvalid):
        session.close()


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


# The contract every provider keeps.


def test_round_trip_returns_the_plaintext_under_a_fresh_nonce(
    provider: Keystore, root_key: str
) -> None:
    first = provider.encrypt(root_key, b"an L2 key, 32 bytes long.......", AAD)
    second = provider.encrypt(root_key, b"an L2 key, 32 bytes long.......", AAD)

    assert len(first) == 12 + 31 + 16
    assert first[:12] != second[:12]
    assert provider.decrypt(root_key, first, AAD) == b"an L2 key, 32 bytes long......."
    assert provider.decrypt(root_key, second, AAD) == b"an L2 key, 32 bytes long......."


def test_empty_plaintext_and_empty_aad_round_trip(provider: Keystore, root_key: str) -> None:
    blob = provider.encrypt(root_key, b"", b"")

    assert len(blob) == 28
    assert provider.decrypt(root_key, blob, b"") == b""


def _flip(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1 :]


TAMPERINGS: dict[str, Callable[[bytes], tuple[bytes, bytes]]] = {
    "wrong_aad": lambda blob: (blob, AAD.replace(b"acme", b"evil")),
    "missing_aad": lambda blob: (blob, b""),
    "flipped_nonce": lambda blob: (_flip(blob, 0), AAD),
    "flipped_ciphertext": lambda blob: (_flip(blob, 12), AAD),
    "flipped_tag": lambda blob: (_flip(blob, len(blob) - 1), AAD),
    "truncated_tag": lambda blob: (blob[:-1], AAD),
    "truncated_to_nonce_and_tag": lambda blob: (blob[:28], AAD),
    "shorter_than_nonce_and_tag": lambda blob: (blob[:27], AAD),
    "empty": lambda blob: (b"", AAD),
}


@pytest.mark.parametrize("tampering", TAMPERINGS)
def test_tampered_or_misbound_ciphertext_is_rejected_and_the_provider_keeps_working(
    provider: Keystore, root_key: str, tampering: str
) -> None:
    blob = provider.encrypt(root_key, b"secret L2 key material", AAD)
    bad_blob, bad_aad = TAMPERINGS[tampering](blob)

    with pytest.raises(RootKeyIntegrityError) as caught:
        provider.decrypt(root_key, bad_blob, bad_aad)

    assert caught.value.code == "ciphertext_invalid"
    assert "secret" not in str(caught.value)
    assert provider.decrypt(root_key, blob, AAD) == b"secret L2 key material"
    assert provider.decrypt(root_key, provider.encrypt(root_key, b"x", AAD), AAD) == b"x"


def test_ciphertext_from_another_root_key_is_rejected(provider: Keystore, root_key: str) -> None:
    other = provider.create_root_key(label="kcm-test-other")
    try:
        blob = provider.encrypt(other, b"payload", AAD)
        with pytest.raises(RootKeyIntegrityError):
            provider.decrypt(root_key, blob, AAD)
    finally:
        provider.destroy(other)


def test_destroyed_root_key_can_no_longer_be_used(provider: Keystore, root_key: str) -> None:
    blob = provider.encrypt(root_key, b"payload", AAD)

    provider.destroy(root_key)

    assert not provider.exists(root_key)
    with pytest.raises(RootKeyNotFound) as caught:
        provider.decrypt(root_key, blob, AAD)
    assert caught.value.code == "root_key_not_found"
    with pytest.raises(RootKeyNotFound):
        provider.encrypt(root_key, b"payload", AAD)
    with pytest.raises(RootKeyNotFound):
        provider.destroy(root_key)


@pytest.mark.parametrize("handle", ["00" * 16, "", "not-hex", "AB" * 16, "00" * 17, "../etc"])
def test_unknown_or_malformed_handles_name_no_key(provider: Keystore, handle: str) -> None:
    assert not provider.exists(handle)
    with pytest.raises(RootKeyNotFound):
        provider.encrypt(handle, b"payload", AAD)
    with pytest.raises(RootKeyNotFound):
        provider.destroy(handle)


def test_supports_answers_for_known_and_unknown_capabilities(provider: Keystore) -> None:
    assert provider.supports(CAP_CREATE)
    assert provider.supports(CAP_DESTROY)
    assert provider.supports(CAP_WRAP)
    # BYOK: both import SHA-1 OAEP material; SHA-256 OAEP only the software one (SoftHSM2 lacks
    # it); nobody imports PKCS#1 v1.5-wrapped material.
    assert provider.supports("import:RSAES_OAEP_SHA_1")
    assert provider.supports("import:RSA_AES_KEY_WRAP_SHA_1")
    assert provider.supports("import:RSAES_OAEP_SHA_256") == (provider.name == "software")
    assert not provider.supports("import:RSAES_PKCS1_V1_5")
    assert not provider.supports("teleport")


def test_health_reports_ok(provider: Keystore) -> None:
    report = provider.health()

    assert report["ok"] is True
    assert report["keystore"] == provider.name


# PKCS#11 specifics.


def test_root_key_is_a_sensitive_non_extractable_aes256_token_object(
    hsm_key: str, token_session: pkcs11.Session
) -> None:
    key = token_session.get_key(object_class=ObjectClass.SECRET_KEY, id=bytes.fromhex(hsm_key))

    assert key[Attribute.KEY_TYPE] == KeyType.AES
    assert key[Attribute.VALUE_LEN] == 32
    assert key[Attribute.LABEL] == "kcm-test-provider"
    assert key[Attribute.TOKEN] is True
    assert key[Attribute.PRIVATE] is True
    assert key[Attribute.SENSITIVE] is True
    assert key[Attribute.ALWAYS_SENSITIVE] is True
    assert key[Attribute.EXTRACTABLE] is False
    assert key[Attribute.NEVER_EXTRACTABLE] is True
    assert key[Attribute.ENCRYPT] is True
    assert key[Attribute.DECRYPT] is True
    assert key[Attribute.WRAP] is False
    assert key[Attribute.UNWRAP] is False
    assert key[Attribute.MODIFIABLE] is False
    with pytest.raises(pkcs11.exceptions.AttributeSensitive):
        key[Attribute.VALUE]
    with pytest.raises(pkcs11.PKCS11Error):
        key[Attribute.WRAP] = True


def test_destroy_removes_the_object_from_the_token(
    hsm: Pkcs11Keystore, hsm_key: str, token_session: pkcs11.Session
) -> None:
    hsm.destroy(hsm_key)

    with pytest.raises(pkcs11.NoSuchKey):
        token_session.get_key(object_class=ObjectClass.SECRET_KEY, id=bytes.fromhex(hsm_key))


def test_key_destroyed_by_another_session_is_not_found_despite_the_cache(
    hsm: Pkcs11Keystore, hsm_key: str, token_session: pkcs11.Session
) -> None:
    blob = hsm.encrypt(hsm_key, b"payload", AAD)  # caches the key object
    token_session.get_key(object_class=ObjectClass.SECRET_KEY, id=bytes.fromhex(hsm_key)).destroy()

    with pytest.raises(RootKeyNotFound):
        hsm.decrypt(hsm_key, blob, AAD)
    assert not hsm.exists(hsm_key)


def test_key_objects_are_looked_up_once_per_process(
    hsm_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cold = Pkcs11Keystore.from_settings()
    finds: list[bytes] = []
    real_find = aes_module.find

    def find(session: Any, key_id: bytes) -> Any:
        finds.append(key_id)
        return real_find(session, key_id)

    monkeypatch.setattr(aes_module, "find", find)

    blob = cold.encrypt(hsm_key, b"payload", AAD)
    cold.decrypt(hsm_key, blob, AAD)
    cold.encrypt(hsm_key, b"payload", AAD)
    assert len(finds) == 1


def test_it_recovers_when_the_library_is_finalised_under_it(
    hsm: Pkcs11Keystore, hsm_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    blob = hsm.encrypt(hsm_key, b"payload", AAD)

    pkcs11.lib(settings.KCM_PKCS11_LIBRARY).finalize()

    assert hsm.decrypt(hsm_key, blob, AAD) == b"payload"
    assert "re-initialising" in caplog.text
    assert hsm.health()["ok"] is True


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


def test_eight_threads_using_the_hsm_at_once_do_not_crash_it() -> None:
    # In a subprocess: without the lock SoftHSM segfaults, which would kill pytest itself.
    result = run_python(
        """
        import json, os, threading
        from apps.keystores.registry import platform_keystore

        provider = platform_keystore()
        shared = provider.create_root_key(label="kcm-test-threads")
        errors = []

        def work(worker):
            try:
                own = provider.create_root_key(label="kcm-test-threads")
                for i in range(200):
                    handle = shared if i % 2 else own
                    aad = f"{worker}:{i}".encode()
                    plaintext = os.urandom(32)
                    blob = provider.encrypt(handle, plaintext, aad)
                    assert provider.decrypt(handle, blob, aad) == plaintext
                provider.destroy(own)
            except Exception as exc:
                errors.append(repr(exc))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        provider.destroy(shared)
        print(json.dumps({"errors": errors}))
        """
    )

    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert json.loads(result.stdout) == {"errors": []}


def test_forked_child_reinitialises_and_the_parent_keeps_working(
    hsm: Pkcs11Keystore, hsm_key: str
) -> None:
    before = hsm.encrypt(hsm_key, b"before fork", AAD)  # the parent's session is live
    read_end, write_end = os.pipe()

    pid = os.fork()
    if pid == 0:  # the child must never return into pytest
        status = 1
        try:
            os.close(read_end)
            if hsm.decrypt(hsm_key, before, AAD) == b"before fork":
                os.write(write_end, hsm.encrypt(hsm_key, b"from the child", AAD))
                status = 0
        finally:
            os._exit(status)

    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        from_child = pipe.read()
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert hsm.decrypt(hsm_key, from_child, AAD) == b"from the child"
    assert hsm.decrypt(hsm_key, hsm.encrypt(hsm_key, b"after", AAD), AAD) == b"after"


# The registry.


def test_get_provider_is_one_object_per_process_until_reset(settings: Settings) -> None:
    settings.KCM_HSM_PROVIDER = "pkcs11"
    reset_platform_keystore()
    try:
        provider = platform_keystore()
        assert isinstance(provider, Pkcs11Keystore)
        assert platform_keystore() is provider
        reset_platform_keystore()
        assert platform_keystore() is not provider
    finally:
        reset_platform_keystore()


def test_get_provider_builds_the_configured_software_provider(
    settings: Settings, tmp_path: Path
) -> None:
    settings.KCM_HSM_PROVIDER = "software"
    settings.KCM_ALLOW_SOFTWARE_PROVIDER = True
    settings.KCM_SOFTWARE_PROVIDER_FILE = tmp_path / "keys.json"
    reset_platform_keystore()
    try:
        assert isinstance(platform_keystore(), SoftwareKeystore)
    finally:
        reset_platform_keystore()


# Software specifics.


def test_software_keys_persist_and_other_instances_see_changes(tmp_path: Path) -> None:
    path = tmp_path / "state" / "keys.json"
    writer = SoftwareKeystore(path=path, allowed=True)
    handle = writer.create_root_key(label="kcm-test")
    blob = writer.encrypt(handle, b"payload", AAD)

    reader = SoftwareKeystore(path=path, allowed=True)
    assert reader.decrypt(handle, blob, AAD) == b"payload"

    reader.destroy(handle)
    assert not writer.exists(handle)
    with pytest.raises(RootKeyNotFound):
        writer.decrypt(handle, blob, AAD)


def test_software_writers_keep_each_others_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    first, second = (SoftwareKeystore(path=path, allowed=True) for _ in range(2))
    assert first.health()["ok"] and second.health()["ok"]  # both have read the empty state

    one = first.create_root_key(label="one")
    two = second.create_root_key(label="two")

    fresh = SoftwareKeystore(path=path, allowed=True)
    assert fresh.exists(one) and fresh.exists(two)


def test_software_key_file_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    SoftwareKeystore(path=path, allowed=True).create_root_key(label="kcm-test")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_software_provider_warns_that_no_hsm_protects_the_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        SoftwareKeystore(path=tmp_path / "keys.json", allowed=True)

    assert any("NOT protected by an HSM" in record.getMessage() for record in caplog.records)


def test_software_provider_refuses_when_not_allowed(tmp_path: Path) -> None:
    with pytest.raises(KeystoreUnavailable) as caught:
        SoftwareKeystore(path=tmp_path / "keys.json", allowed=False)

    assert "KCM_ALLOW_SOFTWARE_PROVIDER" in str(caught.value)


def test_corrupt_software_key_file_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(
        '{"version": 1, "keys": {"' + "00" * 16 + '": {"label": "x", "key": "c2hvcnQ="}}}'
    )
    provider = SoftwareKeystore(path=path, allowed=True)

    with pytest.raises(KeystoreUnavailable):
        provider.exists("00" * 16)
    assert provider.health()["ok"] is False
