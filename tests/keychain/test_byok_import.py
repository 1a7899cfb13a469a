"""BYOK import: the customer wraps their own AES-256 key with `cryptography` (an
implementation independent of KCM's), KCM unwraps it inside the HSM (real SoftHSM2) or the
software provider, and data keys work under it. Each refusal has its own code and changes
nothing."""

from __future__ import annotations

import base64
import os
from datetime import datetime, timedelta
from typing import Any

import pkcs11
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.keychain import byok
from apps.keychain.models import ImportToken
from apps.keystores.pkcs11.keystore import Pkcs11Keystore
from apps.keystores.registry import platform_keystore
from tests.helpers import assert_problem
from tests.keychain.byokkit import ALL, SOFTHSM, Byok, customer_kcv, customer_wrap


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
