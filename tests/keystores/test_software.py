"""The software keystore (development only): its key file, shared by instances and writers,
private to its owner, refused unless allowed, and unavailable when corrupt."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from apps.keystores.base import KeystoreUnavailable, RootKeyNotFound
from apps.keystores.software import SoftwareKeystore
from tests.keystores.keystorekit import AAD


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
