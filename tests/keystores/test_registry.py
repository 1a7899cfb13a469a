"""The registry: one platform keystore per process, of the configured kind, until reset."""

from __future__ import annotations

from pathlib import Path

from pytest_django import Settings

from apps.keystores.pkcs11.keystore import Pkcs11Keystore
from apps.keystores.registry import platform_keystore, reset_platform_keystore
from apps.keystores.software import SoftwareKeystore


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
