"""BYOK key check values: the classic one (the first bytes of AES-ECB(key, zero block)) is also
the first bytes of the key's AES-GCM hash key H; KCM offers the CMAC-based one of newer
standards (AES-CMAC(key, zero block), first 5 bytes) beside it, computed in the HSM, and says
which is which."""

from __future__ import annotations

import os
from typing import Any

import pytest

from apps.core.roles import Role
from tests.helpers import Api
from tests.keychain.byokkit import Byok, customer_cmac_kcv, customer_kcv


@pytest.mark.parametrize("provider", ["pkcs11", "software"])
def test_the_import_shows_both_check_values(
    api: Any, settings: Any, tmp_path: Any, provider: str
) -> None:
    from apps.keystores.registry import reset_platform_keystore

    settings.KCM_HSM_PROVIDER = provider
    settings.KCM_SOFTWARE_PROVIDER_FILE = tmp_path / "software-provider.keys"
    reset_platform_keystore()
    try:
        byok = Byok(api)
        l1 = byok.create(f"kcv-{provider}")
        material = os.urandom(32)

        imported = byok.import_material(l1["id"], material)

        assert imported.status_code == 200, imported.content
        assert imported.json_body["key_check_value"] == customer_kcv(material)
        assert imported.json_body["key_check_value_cmac"] == customer_cmac_kcv(material)
        admin: Api = api("acme", Role.KEY_ADMIN)
        shown = admin.get(f"/api/v1/keys/{l1['id']}/material/").json_body["versions"][0]
        assert shown["key_check_value_cmac"] == customer_cmac_kcv(material)
    finally:
        reset_platform_keystore()
