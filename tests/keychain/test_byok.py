"""BYOK end to end: the customer wraps their own AES-256 key with `cryptography` (an
implementation independent of KCM's), KCM unwraps it inside the HSM (real SoftHSM2) or the
software provider, and data keys work under it. Failure paths each have their own code and
change nothing."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding
from django.test import Client
from django.utils import timezone
from django_tenants.utils import schema_context, tenant_context

from apps.core.roles import Role
from apps.keychain import byok
from apps.keychain.cache import key_cache
from apps.keychain.models import CustomerKeyVersion, ImportToken
from apps.keystores.pkcs11.keystore import Pkcs11Keystore
from apps.keystores.registry import platform_keystore, reset_platform_keystore
from apps.tenants.models import Tenant
from tests.helpers import Api, assert_problem

REPO = Path(__file__).resolve().parents[2]
ALL = [
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "RSA_AES_KEY_WRAP_SHA_1",
    "RSA_AES_KEY_WRAP_SHA_256",
]
SOFTHSM = ["RSAES_OAEP_SHA_1", "RSA_AES_KEY_WRAP_SHA_1"]
CTX = {"invoice": "42"}


# --- the customer's side: plain `cryptography`, nothing from KCM ---------------------------


def customer_wrap(public_pem: str, algorithm: str, material: bytes) -> bytes:
    public = serialization.load_pem_public_key(public_pem.encode())
    assert isinstance(public, rsa.RSAPublicKey)
    digest = hashes.SHA256() if algorithm.endswith("256") else hashes.SHA1()
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None)
    if algorithm.startswith("RSAES_OAEP"):
        return public.encrypt(material, oaep)
    ephemeral = os.urandom(32)
    return public.encrypt(ephemeral, oaep) + aes_key_wrap_with_padding(ephemeral, material)


def customer_kcv(material: bytes) -> str:
    block = Cipher(algorithms.AES(material), modes.ECB()).encryptor().update(bytes(16))
    return block[:3].hex()


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(params=["pkcs11", "software"])
def provider_kind(request: pytest.FixtureRequest, tmp_path: Path, settings: Any) -> Iterator[str]:
    """Run the test on real SoftHSM2, then on the software provider."""
    settings.KCM_HSM_PROVIDER = request.param
    settings.KCM_SOFTWARE_PROVIDER_FILE = tmp_path / "software-provider.keys"
    reset_platform_keystore()
    yield request.param
    reset_platform_keystore()


class Byok:
    """A key admin and a key user of acme, driving the BYOK API."""

    def __init__(self, api: Any) -> None:
        self.admin: Api = api("acme", Role.KEY_ADMIN)
        self.user: Api = api("acme", Role.KEY_USER)

    def create(self, name: str = "imported") -> dict[str, Any]:
        made = self.admin.post("/api/v1/customer-keys/byok/", {"name": name})
        assert made.status_code == 201, made.content
        return dict(made.json_body)

    def parameters(self, key_id: str, algorithm: str, bits: int = 2048) -> Any:
        return self.admin.post(
            f"/api/v1/keys/{key_id}/import-parameters/",
            {"algorithm": algorithm, "wrapping_key_bits": bits},
        )

    def import_(self, key_id: str, token: str, wrapped: bytes, **extra: Any) -> Any:
        body = {"import_token": token, "wrapped_material": base64.b64encode(wrapped).decode()}
        return self.admin.post(f"/api/v1/keys/{key_id}/import/", {**body, **extra})

    def import_material(
        self, key_id: str, material: bytes, algorithm: str = "RSAES_OAEP_SHA_1", **extra: Any
    ) -> Any:
        params = self.parameters(key_id, algorithm)
        assert params.status_code == 201, params.content
        wrapped = customer_wrap(params.json_body["public_key_pem"], algorithm, material)
        return self.import_(key_id, params.json_body["import_token"], wrapped, **extra)

    def service_key(self, key_id: str, name: str = "payments") -> None:
        made = self.admin.post("/api/v1/service-keys/", {"name": name, "customer_key_id": key_id})
        assert made.status_code == 201, made.content

    def data_key(self, name: str = "payments") -> Any:
        return self.user.post(f"/api/v1/service-keys/{name}/generate-data-key/", {"context": CTX})

    def decrypt(self, ciphertext: str, name: str = "payments") -> Any:
        return self.user.post(
            f"/api/v1/service-keys/{name}/decrypt-data-key/",
            {"ciphertext": ciphertext, "context": CTX},
        )

    def material(self, key_id: str) -> dict[str, Any]:
        return dict(self.admin.get(f"/api/v1/keys/{key_id}/material/").json_body)


@pytest.fixture
def byok_api(api: Any) -> Byok:
    return Byok(api)


def _imported_objects(label: str) -> int:
    """Objects in the platform token with this label (for "nothing left over"), looked up
    under the process-wide PKCS#11 lock like every other call."""
    provider = platform_keystore()
    assert isinstance(provider, Pkcs11Keystore)
    return provider.session.run(
        lambda session: len(list(session.get_objects({pkcs11.Attribute.LABEL: label})))
    )


# --- acceptance 1: end to end, every algorithm the provider supports ---------------------


@pytest.mark.parametrize("algorithm", ALL)
def test_imported_key_works_end_to_end_and_its_check_value_matches(
    provider_kind: str, byok_api: Byok, algorithm: str
) -> None:
    if provider_kind == "pkcs11" and algorithm not in SOFTHSM:
        pytest.skip("SoftHSM2 2.6.1 has no SHA-256 OAEP: see the refusal test")
    l1 = byok_api.create()
    assert (l1["state"], l1["origin"], l1["versions"]) == ("PENDING_IMPORT", "BYOK", [])
    material = os.urandom(32)

    imported = byok_api.import_material(l1["id"], material, algorithm)

    assert imported.status_code == 200, imported.content
    assert imported.json_body["key_check_value"] == customer_kcv(material)
    assert imported.json_body["version"] == 1
    assert imported.json_body["key"]["state"] == "ENABLED"
    byok_api.service_key(l1["id"])
    made = byok_api.data_key()
    assert made.status_code == 200, made.content
    back = byok_api.decrypt(made.json_body["ciphertext"])
    assert back.json_body["plaintext"] == made.json_body["plaintext"]


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_every_wrapping_key_size_works_in_the_hsm(byok_api: Byok, bits: int) -> None:
    l1 = byok_api.create()
    params = byok_api.parameters(l1["id"], "RSA_AES_KEY_WRAP_SHA_1", bits)
    assert params.status_code == 201, params.content
    public = serialization.load_der_public_key(base64.b64decode(params.json_body["public_key_der"]))
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == bits
    assert params.json_body["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")
    expires = datetime.fromisoformat(params.json_body["expires_at"])
    assert timedelta(hours=23, minutes=59) < expires - timezone.now() <= timedelta(hours=24)
    material = os.urandom(32)
    wrapped = customer_wrap(params.json_body["public_key_pem"], "RSA_AES_KEY_WRAP_SHA_1", material)
    done = byok_api.import_(l1["id"], params.json_body["import_token"], wrapped)
    assert done.json_body["key_check_value"] == customer_kcv(material)


@pytest.mark.parametrize(
    "algorithm", ["RSAES_OAEP_SHA_256", "RSA_AES_KEY_WRAP_SHA_256", "RSA_PKCS1"]
)
def test_the_hsm_refuses_what_it_cannot_unwrap_and_lists_what_it_can(
    byok_api: Byok, algorithm: str
) -> None:
    l1 = byok_api.create()
    refused = byok_api.parameters(l1["id"], algorithm)
    assert_problem(refused, 400, "import_algorithm_unsupported")
    assert refused.json_body["supported"] == SOFTHSM
    assert all(name in refused.json_body["detail"] for name in SOFTHSM)


def test_each_provider_lists_the_algorithms_it_can_unwrap(provider_kind: str) -> None:
    expected = SOFTHSM if provider_kind == "pkcs11" else ALL
    assert byok.supported_algorithms() == expected


# --- acceptance 2: each refusal has its own code and changes nothing ---------------------


def _refusal_cases() -> list[Any]:
    kwp, oaep = "RSA_AES_KEY_WRAP_SHA_1", "RSAES_OAEP_SHA_1"
    return [
        pytest.param("expired_token", kwp, "import_token_expired", id="expired token"),
        pytest.param("wrong_wrapping_key", kwp, "import_wrapping_key_mismatch", id="wrong key"),
        pytest.param(
            "wrong_wrapping_key", oaep, "import_wrapping_key_mismatch", id="wrong key oaep"
        ),
        pytest.param("tampered", kwp, "import_material_tampered", id="tampered blob"),
        pytest.param("truncated", kwp, "import_blob_malformed", id="truncated blob"),
        pytest.param("short_key", kwp, "import_key_length_invalid", id="AES-128 key"),
        pytest.param("short_key", oaep, "import_key_length_invalid", id="AES-128 key oaep"),
        pytest.param("odd_key", kwp, "import_key_length_invalid", id="25-byte key"),
        pytest.param("odd_key", oaep, "import_key_length_invalid", id="25-byte key oaep"),
        pytest.param("used_token", kwp, "import_token_invalid", id="token used already"),
        pytest.param("other_keys_token", kwp, "import_token_invalid", id="token of another key"),
        pytest.param("different_material", kwp, "import_material_mismatch", id="other material"),
    ]


@pytest.mark.parametrize(("case", "algorithm", "code"), _refusal_cases())
def test_each_refused_import_has_its_own_code_and_changes_nothing(
    provider_kind: str, byok_api: Byok, case: str, algorithm: str, code: str
) -> None:
    l1 = byok_api.create()
    material = os.urandom(32)
    if case in ("used_token", "different_material"):
        assert byok_api.import_material(l1["id"], material, algorithm).status_code == 200
    params = byok_api.parameters(l1["id"], algorithm).json_body
    token, public = params["import_token"], params["public_key_pem"]
    wrapped = customer_wrap(public, algorithm, material)
    if case == "expired_token":
        with schema_context("t_acme"):
            ImportToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    elif case == "wrong_wrapping_key":
        other = byok_api.parameters(l1["id"], algorithm).json_body["public_key_pem"]
        wrapped = customer_wrap(other, algorithm, material)
    elif case == "tampered":
        wrapped = wrapped[:-3] + bytes([wrapped[-3] ^ 0x01]) + wrapped[-2:]  # in the key wrap
    elif case == "truncated":
        wrapped = wrapped[:-5]
    elif case == "short_key":
        wrapped = customer_wrap(public, algorithm, os.urandom(16))
    elif case == "odd_key":
        wrapped = customer_wrap(public, algorithm, os.urandom(25))
    elif case == "used_token":
        assert byok_api.import_(l1["id"], token, wrapped).status_code == 200
    elif case == "other_keys_token":
        other_key = byok_api.create("other")
        token = byok_api.parameters(other_key["id"], algorithm).json_body["import_token"]
    elif case == "different_material":
        wrapped = customer_wrap(public, algorithm, os.urandom(32))
    before = byok_api.material(l1["id"])
    label = "kcm/acme/imported/imported"
    objects_before = _imported_objects(label) if provider_kind == "pkcs11" else 0

    refused = byok_api.import_(l1["id"], token, wrapped)

    assert_problem(refused, 409 if code == "import_material_mismatch" else 400, code)
    assert byok_api.material(l1["id"]) == before
    if provider_kind == "pkcs11":
        assert _imported_objects(label) == objects_before


def test_a_token_stays_usable_after_a_refused_attempt(byok_api: Byok) -> None:
    l1 = byok_api.create()
    params = byok_api.parameters(l1["id"], "RSAES_OAEP_SHA_1").json_body
    bad = customer_wrap(params["public_key_pem"], "RSAES_OAEP_SHA_1", os.urandom(16))
    assert byok_api.import_(l1["id"], params["import_token"], bad).status_code == 400
    good = customer_wrap(params["public_key_pem"], "RSAES_OAEP_SHA_1", os.urandom(32))
    assert byok_api.import_(l1["id"], params["import_token"], good).status_code == 200


def test_an_import_of_bad_base64_or_a_bad_expiry_is_refused(byok_api: Byok) -> None:
    l1 = byok_api.create()
    token = byok_api.parameters(l1["id"], "RSAES_OAEP_SHA_1").json_body["import_token"]
    bad = byok_api.admin.post(
        f"/api/v1/keys/{l1['id']}/import/", {"import_token": token, "wrapped_material": "%%"}
    )
    assert_problem(bad, 400, "invalid_base64")
    past = (timezone.now() - timedelta(days=1)).isoformat()
    late = byok_api.import_(l1["id"], token, b"x" * 256, material_expires_at=past)
    assert_problem(late, 400, "invalid_material_expiry")


# --- acceptance 3: expiry and deletion; the same material restores everything ------------


def _pass_time_beyond_expiry(key_id: str) -> None:
    """As if the clock had passed the material's expiry (the test cannot wait for it)."""
    past = timezone.now() - timedelta(seconds=1)
    with schema_context("t_acme"):
        CustomerKeyVersion.objects.filter(key__pk=key_id).update(material_expires_at=past)


def test_expired_material_stops_data_keys_and_the_same_material_brings_them_back(
    provider_kind: str, byok_api: Byok
) -> None:
    l1 = byok_api.create()
    material = os.urandom(32)
    expiry = (timezone.now() + timedelta(hours=1)).isoformat()
    imported = byok_api.import_material(l1["id"], material, material_expires_at=expiry)
    assert imported.json_body["material_expires_at"] is not None
    byok_api.service_key(l1["id"])
    old = byok_api.data_key().json_body

    _pass_time_beyond_expiry(l1["id"])
    key_cache().reset()  # the cache entry's TTL has passed too, or another process asks
    assert_problem(byok_api.data_key(), 409, "key_material_expired")
    # The sweep (beat) deletes the material from the HSM and tells every process.
    with tenant_context(Tenant.objects.get(slug="acme")):
        assert byok.byok_sweep()["expired_material"] == 1
    assert_problem(byok_api.decrypt(old["ciphertext"]), 409, "key_material_expired")
    assert byok_api.material(l1["id"])["versions"][0]["material_present"] is False

    again = byok_api.import_material(l1["id"], material)

    assert again.status_code == 200, again.content
    assert again.json_body["version"] == 1
    assert again.json_body["key_check_value"] == customer_kcv(material)
    back = byok_api.decrypt(old["ciphertext"])
    assert back.status_code == 200 and back.json_body["plaintext"] == old["plaintext"]


def test_deleted_material_stops_data_keys_until_the_same_material_returns(
    provider_kind: str, byok_api: Byok
) -> None:
    l1 = byok_api.create()
    material = os.urandom(32)
    byok_api.import_material(l1["id"], material)
    byok_api.service_key(l1["id"])
    old = byok_api.data_key().json_body

    deleted = byok_api.admin.post(f"/api/v1/keys/{l1['id']}/delete-imported-material/", {})

    assert deleted.status_code == 200 and deleted.json_body["state"] == "PENDING_IMPORT"
    assert "deleted" in deleted.json_body["state_reason"]
    assert_problem(byok_api.decrypt(old["ciphertext"]), 409, "key_pending_import")
    assert_problem(byok_api.data_key(), 409, "key_pending_import")
    assert_problem(
        byok_api.import_material(l1["id"], os.urandom(32)), 409, "import_material_mismatch"
    )

    assert byok_api.import_material(l1["id"], material).status_code == 200

    back = byok_api.decrypt(old["ciphertext"])
    assert back.status_code == 200 and back.json_body["plaintext"] == old["plaintext"]


def test_a_byok_key_rotates_by_importing_new_material_as_a_new_version(
    provider_kind: str, byok_api: Byok
) -> None:
    l1 = byok_api.create()
    first, second = os.urandom(32), os.urandom(32)
    byok_api.import_material(l1["id"], first)
    byok_api.service_key(l1["id"])
    old = byok_api.data_key().json_body
    assert_problem(
        byok_api.admin.post(f"/api/v1/keys/{l1['id']}/rotate/", {}), 409, "invalid_key_state"
    )
    assert_problem(
        byok_api.import_material(l1["id"], first, new_version=True), 409, "import_material_not_new"
    )

    rotated = byok_api.import_material(l1["id"], second, new_version=True)

    assert rotated.status_code == 200, rotated.content
    assert rotated.json_body["version"] == 2
    assert rotated.json_body["key_check_value"] == customer_kcv(second)
    versions = rotated.json_body["key"]["versions"]
    assert [(v["version"], v["primary"], v["key_check_value"]) for v in versions] == [
        (1, False, customer_kcv(first)),
        (2, True, customer_kcv(second)),
    ]
    # The tenant key rotates under the new version; what was made before still decrypts.
    l2 = byok_api.admin.get("/api/v1/keys/").json_body["results"][0]["tenant_key"]["id"]
    assert byok_api.admin.post(f"/api/v1/keys/{l2}/rotate/", {}).status_code == 200
    assert byok_api.decrypt(old["ciphertext"]).status_code == 200
    assert byok_api.data_key().status_code == 200


def test_a_pending_key_takes_no_service_keys(byok_api: Byok) -> None:
    l1 = byok_api.create()
    refused = byok_api.admin.post(
        "/api/v1/service-keys/", {"name": "payments", "customer_key_id": l1["id"]}
    )
    assert_problem(refused, 409, "key_pending_import")


def test_hsm_keys_take_no_imported_material(byok_api: Byok) -> None:
    hsm = byok_api.admin.post("/api/v1/customer-keys/", {"name": "root"}).json_body
    refused = byok_api.parameters(hsm["id"], "RSAES_OAEP_SHA_1")
    assert_problem(refused, 409, "invalid_key_state")


def test_spent_and_expired_wrapping_keys_leave_the_hsm(byok_api: Byok) -> None:
    l1 = byok_api.create()
    byok_api.import_material(l1["id"], os.urandom(32))
    byok_api.parameters(l1["id"], "RSAES_OAEP_SHA_1")
    with schema_context("t_acme"):
        assert byok.byok_sweep()["wrapping_keys_removed"] == 1  # the used one
        ImportToken.objects.update(expires_at=timezone.now())
        assert byok.byok_sweep()["wrapping_keys_removed"] == 1  # the expired one
        assert not ImportToken.objects.exclude(wrapping_handle="").exists()


# --- isolation --------------------------------------------------------------------------


def test_another_tenant_cannot_see_or_import_into_the_key(byok_api: Byok, api: Any) -> None:
    l1 = byok_api.create()
    params = byok_api.parameters(l1["id"], "RSAES_OAEP_SHA_1").json_body
    globex = api("globex", Role.KEY_ADMIN)
    assert_problem(globex.get(f"/api/v1/keys/{l1['id']}/material/"), 404, "key_not_found")
    wrapped = customer_wrap(params["public_key_pem"], "RSAES_OAEP_SHA_1", os.urandom(32))
    stolen = globex.post(
        f"/api/v1/keys/{l1['id']}/import/",
        {
            "import_token": params["import_token"],
            "wrapped_material": base64.b64encode(wrapped).decode(),
        },
    )
    assert_problem(stolen, 404, "key_not_found")
    acme_token_in_globex = api("acme", Role.KEY_ADMIN, on="globex").get(
        f"/api/v1/keys/{l1['id']}/material/"
    )
    assert_problem(acme_token_in_globex, 403, "wrong_tenant")


def test_a_key_user_cannot_import(byok_api: Byok) -> None:
    l1 = byok_api.create()
    refused = byok_api.user.post(
        f"/api/v1/keys/{l1['id']}/import-parameters/", {"algorithm": "RSAES_OAEP_SHA_1"}
    )
    assert_problem(refused, 403, "role_not_allowed")


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
    page = client.get(wizard_url, HTTP_HOST="acme.localhost")
    assert customer_kcv(material).encode() in page.content
    assert b"ENABLED" in page.content
    listing = client.get("/keys/", HTTP_HOST="acme.localhost")
    assert wizard_url.encode() in listing.content
