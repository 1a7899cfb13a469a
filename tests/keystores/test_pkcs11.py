"""The PKCS#11 keystore on real SoftHSM2 (no mocks): its root keys as token objects, their
lookup cache, recovery from a finalised library, and use from threads and a forked child.
No database is used."""

from __future__ import annotations

import json
import os
from typing import Any

import pkcs11
import pytest
from django.conf import settings
from pkcs11 import Attribute, KeyType, ObjectClass

from apps.keystores.base import RootKeyNotFound
from apps.keystores.pkcs11 import aes as aes_module
from apps.keystores.pkcs11.keystore import Pkcs11Keystore
from tests.keystores.keystorekit import AAD, run_python


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
