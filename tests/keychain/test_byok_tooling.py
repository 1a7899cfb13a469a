"""BYOK with the customer's tools: the wrapping script, the documented openssl recipe and
the console wizard."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from apps.core.roles import Role
from apps.keychain.models import ImportToken
from tests.keychain.byokkit import (
    ALL,
    SOFTHSM,
    Byok,
    customer_cmac_kcv,
    customer_kcv,
    customer_wrap,
)

REPO = Path(__file__).resolve().parents[2]


# --- customer tooling: the script and the documented openssl recipe ----------------------


@pytest.mark.parametrize("algorithm", ALL)
def test_the_wrapping_script_produces_what_kcm_imports(
    provider_kind: str, byok_api: Byok, tmp_path: Path, algorithm: str
) -> None:
    if provider_kind == "pkcs11" and algorithm not in SOFTHSM:
        pytest.skip("SoftHSM2 2.6.1 has no SHA-256 OAEP")
    l1 = byok_api.create()
    params = byok_api.parameters(l1["id"], algorithm).json_body
    material = os.urandom(32)
    (tmp_path / "key.bin").write_bytes(material)
    (tmp_path / "wrapping.pem").write_text(params["public_key_pem"])
    run = subprocess.run(
        [sys.executable, str(REPO / "tools" / "byok_wrap.py"), "--key", str(tmp_path / "key.bin"),
         "--public-key", str(tmp_path / "wrapping.pem"), "--algorithm", algorithm,
         "--out", str(tmp_path / "wrapped.b64"), "--base64"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert f"key check value: {customer_kcv(material)}" in run.stderr
    done = byok_api.admin.post(
        f"/api/v1/keys/{l1['id']}/import/",
        {
            "import_token": params["import_token"],
            "wrapped_material": (tmp_path / "wrapped.b64").read_text().strip(),
        },
    )
    assert done.status_code == 200, done.content
    assert done.json_body["key_check_value"] == customer_kcv(material)


def test_the_documented_openssl_recipe_works(byok_api: Byok, tmp_path: Path) -> None:
    """docs/byok.md, RSA_AES_KEY_WRAP_SHA_1 with openssl 3, run as written (SHA-1: SoftHSM)."""
    l1 = byok_api.create()
    params = byok_api.parameters(l1["id"], "RSA_AES_KEY_WRAP_SHA_1").json_body
    (tmp_path / "WrappingPublicKey.pem").write_text(params["public_key_pem"])
    script = f"""
set -euo pipefail
cd {tmp_path}
openssl rand -out KeyMaterial.bin 32
openssl rand -out EphemeralKey.bin 32
openssl pkeyutl -encrypt -pubin -inkey WrappingPublicKey.pem -in EphemeralKey.bin \\
  -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha1 -pkeyopt rsa_mgf1_md:sha1 \\
  -out EncryptedEphemeralKey.bin
openssl enc -id-aes256-wrap-pad -K "$(od -An -tx1 -v EphemeralKey.bin | tr -d ' \\n')" -iv A65959A6 \\
  -in KeyMaterial.bin -out WrappedKeyMaterial.bin
cat EncryptedEphemeralKey.bin WrappedKeyMaterial.bin > WrappedMaterial.bin
rm EphemeralKey.bin
head -c 16 /dev/zero | openssl enc -aes-256-ecb -nopad -K "$(od -An -tx1 -v KeyMaterial.bin | tr -d ' \\n')" \\
  | od -An -tx1 | tr -d ' \\n' | head -c 6
"""
    kcv = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    wrapped = (tmp_path / "WrappedMaterial.bin").read_bytes()
    done = byok_api.import_(l1["id"], params["import_token"], wrapped)
    assert done.status_code == 200, done.content
    assert done.json_body["key_check_value"] == kcv.strip()
    assert kcv.strip() == customer_kcv((tmp_path / "KeyMaterial.bin").read_bytes())


# --- the console wizard -------------------------------------------------------------------


def test_the_console_wizard_creates_imports_and_shows_the_check_value(world: Any) -> None:
    client = Client(HTTP_HOST="acme.localhost")
    client.force_login(world.users[("acme", Role.KEY_ADMIN)])
    created = client.post("/keys/byok/new/", {"name": "wizard"}, HTTP_HOST="acme.localhost")
    assert created.status_code == 302, created.content
    wizard_url = created["Location"]
    page = client.get(wizard_url, HTTP_HOST="acme.localhost")
    assert page.status_code == 200 and b"PENDING_IMPORT" in page.content
    assert b"RSA_AES_KEY_WRAP_SHA_1" in page.content and b"RSAES_OAEP_SHA_256" not in page.content

    asked = client.post(
        f"{wizard_url}parameters/",
        {"algorithm": "RSA_AES_KEY_WRAP_SHA_1", "wrapping_key_bits": "2048"},
        HTTP_HOST="acme.localhost",
    )
    assert asked.status_code == 302
    with schema_context("t_acme"):
        token = ImportToken.objects.get(key__name="wizard")
    public = client.get(f"{wizard_url}tokens/{token.pk}/public-key.pem", HTTP_HOST="acme.localhost")
    assert public.status_code == 200 and public["Content-Disposition"].startswith("attachment")
    token_file = client.get(
        f"{wizard_url}tokens/{token.pk}/import-token.txt", HTTP_HOST="acme.localhost"
    )
    material = os.urandom(32)
    wrapped = customer_wrap(public.content.decode(), "RSA_AES_KEY_WRAP_SHA_1", material)

    from django.core.files.uploadedfile import SimpleUploadedFile

    uploaded = client.post(
        f"{wizard_url}import/",
        {
            "import_token": token_file.content.decode().strip(),
            "wrapped_material": SimpleUploadedFile("wrapped.bin", wrapped),
        },
        HTTP_HOST="acme.localhost",
    )
    assert uploaded.status_code == 302
    html = client.get(wizard_url, HTTP_HOST="acme.localhost").content.decode()
    # Both check values, each under the heading that says which it is.
    assert f'<code data-testid="kcv-classic">{customer_kcv(material)}</code>' in html
    assert f'<code data-testid="kcv-cmac">{customer_cmac_kcv(material)}</code>' in html
    assert "Key check value (classic, AES-ECB)" in html and "Key check value (CMAC)" in html
    assert "ENABLED" in html
    listing = client.get("/keys/", HTTP_HOST="acme.localhost")
    assert wizard_url.encode() in listing.content
