"""Data keys and payloads end to end on SoftHSM2: L1 (HSM) → L2 → L3 → L4."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from apps.keystores.registry import platform_keystore
from tests.helpers import Api, KeystoreCalls, assert_problem, host_of
from tests.keychain.dataplanekit import PlaneClient

CTX = {"tenant_record": "invoice-42", "purpose": "billing"}
PAYMENTS = "/api/v1/service-keys/payments"


@pytest.fixture(params=["django", "dataplane"])
def api(world: Any, request: pytest.FixtureRequest) -> Any:
    """Every test here runs on Django's path, then through the data plane in front of it
    (apps.keychain.dataplane, as kms_project.wsgi serves it)."""

    def make(slug: str, role: str | None = None, *, on: str | None = None) -> Api:
        host = host_of(on or slug)
        client = PlaneClient(HTTP_HOST=host) if request.param == "dataplane" else None
        return Api(host, world.tokens[(slug, role)] if role else None, client)

    return make


def test_generate_and_decrypt_a_data_key(chain: Any) -> None:
    user = chain()["user"]
    made = user.post(f"{PAYMENTS}/generate-data-key/", {"context": CTX})
    assert made.status_code == 200, made.content
    plaintext = base64.b64decode(made.json_body["plaintext"])
    assert len(plaintext) == 32
    back = user.post(
        f"{PAYMENTS}/decrypt-data-key/",
        {"ciphertext": made.json_body["ciphertext"], "context": CTX},
    )
    assert back.status_code == 200
    assert base64.b64decode(back.json_body["plaintext"]) == plaintext
    # The data key really encrypts: use it the way an application would.
    nonce = b"\x00" * 12
    assert (
        AESGCM(plaintext).decrypt(nonce, AESGCM(plaintext).encrypt(nonce, b"hi", None), None)
        == b"hi"
    )


def test_wrapped_only_generation_returns_no_plaintext(chain: Any) -> None:
    made = chain()["user"].post(f"{PAYMENTS}/generate-data-key/", {"include_plaintext": False})
    assert made.status_code == 200 and "plaintext" not in made.json_body


def test_encrypt_and_decrypt_a_payload_with_a_context(chain: Any) -> None:
    user = chain()["user"]
    secret = base64.b64encode(b"card 4111 1111 1111 1111").decode()
    sealed = user.post(f"{PAYMENTS}/encrypt/", {"plaintext": secret, "context": CTX})
    assert sealed.status_code == 200
    opened = user.post(
        f"{PAYMENTS}/decrypt/", {"ciphertext": sealed.json_body["ciphertext"], "context": CTX}
    )
    assert opened.json_body["plaintext"] == secret


def test_each_kind_of_bad_ciphertext_has_its_own_code(chain: Any, api: Any) -> None:
    acme = chain("acme")
    globex = chain("globex")
    user = acme["user"]
    made = user.post(f"{PAYMENTS}/generate-data-key/", {"context": CTX}).json_body["ciphertext"]

    wrong_context = user.post(
        f"{PAYMENTS}/decrypt-data-key/", {"ciphertext": made, "context": {"x": "y"}}
    )
    assert_problem(wrong_context, 400, "context_mismatch")

    raw = bytearray(base64.b64decode(made))
    raw[-5] ^= 0x01
    tampered = base64.b64encode(bytes(raw)).decode()
    assert_problem(
        user.post(f"{PAYMENTS}/decrypt-data-key/", {"ciphertext": tampered, "context": CTX}),
        400,
        "ciphertext_invalid",
    )
    assert_problem(
        user.post(f"{PAYMENTS}/decrypt-data-key/", {"ciphertext": made[:40], "context": CTX}),
        400,
        "ciphertext_malformed",
    )
    assert_problem(
        user.post(f"{PAYMENTS}/decrypt-data-key/", {"ciphertext": "not base64!", "context": CTX}),
        400,
        "invalid_base64",
    )

    other_key = user.post(
        "/api/v1/service-keys/ledger/decrypt-data-key/", {"ciphertext": made, "context": CTX}
    )
    assert_problem(other_key, 400, "ciphertext_wrong_key")

    foreign = (
        globex["user"]
        .post(f"{PAYMENTS}/generate-data-key/", {"context": CTX})
        .json_body["ciphertext"]
    )
    other_tenant = user.post(
        f"{PAYMENTS}/decrypt-data-key/", {"ciphertext": foreign, "context": CTX}
    )
    assert_problem(other_tenant, 400, "ciphertext_wrong_tenant")


def test_a_context_must_be_strings(chain: Any) -> None:
    user = chain()["user"]
    response = user.post(f"{PAYMENTS}/generate-data-key/", {"context": {"n": 1}})
    assert_problem(response, 400, "invalid_context")


def test_payloads_over_4_kib_are_refused(chain: Any) -> None:
    user = chain()["user"]
    big = base64.b64encode(b"x" * 4097).decode()
    assert_problem(user.post(f"{PAYMENTS}/encrypt/", {"plaintext": big}), 400, "payload_too_large")


def test_batches_return_a_result_per_item(chain: Any) -> None:
    user = chain()["user"]
    made = user.post(f"{PAYMENTS}/generate-data-key/batch/", {"items": [{"context": CTX}] * 1000})
    assert made.status_code == 200
    results = made.json_body["results"]
    assert len(results) == 1000 and all(r["ok"] for r in results)
    items = [{"ciphertext": r["ciphertext"], "context": CTX} for r in results[:3]]
    items.append({"ciphertext": results[3]["ciphertext"], "context": {"wrong": "ctx"}})
    items.append({"ciphertext": 12})
    opened = user.post(f"{PAYMENTS}/decrypt-data-key/batch/", {"items": items}).json_body["results"]
    assert [r["ok"] for r in opened] == [True, True, True, False, False]
    assert opened[0]["plaintext"] == results[0]["plaintext"]
    assert opened[3]["error"]["code"] == "context_mismatch"
    assert opened[4]["error"]["code"] == "validation_error"
    too_many = user.post(f"{PAYMENTS}/generate-data-key/batch/", {"items": [{}] * 1001})
    assert_problem(too_many, 400, "validation_error")


def test_unknown_service_key_is_a_404(chain: Any) -> None:
    user = chain()["user"]
    assert_problem(
        user.post("/api/v1/service-keys/nope/generate-data-key/", {}), 404, "key_not_found"
    )


def test_data_key_operations_after_warm_up_make_no_hsm_calls(chain: Any) -> None:
    user = chain()["user"]
    user.post(f"{PAYMENTS}/generate-data-key/", {"context": CTX})
    with KeystoreCalls(platform_keystore()) as calls:
        for _ in range(20):
            made = user.post(f"{PAYMENTS}/generate-data-key/", {"context": CTX}).json_body
            user.post(
                f"{PAYMENTS}/decrypt-data-key/",
                {"ciphertext": made["ciphertext"], "context": CTX},
            )
    assert calls.count == 0


@pytest.mark.parametrize("operation", ["generate-data-key", "encrypt"])
def test_encryptions_stop_at_the_usage_limit(chain: Any, settings: Any, operation: str) -> None:
    settings.KCM_GCM_USAGE_LIMIT = 5
    settings.KCM_USAGE_BLOCK = 2
    made = chain()
    user = made["user"]
    body = {"plaintext": "aGk="} if operation == "encrypt" else {}
    for _ in range(5):
        assert user.post(f"{PAYMENTS}/{operation}/", body).status_code == 200
    assert_problem(user.post(f"{PAYMENTS}/{operation}/", body), 409, "usage_limit_reached")
    # Rotating gives a fresh primary version with its own budget.
    key_id = user.get(f"{PAYMENTS}/").json_body["id"]
    assert made["admin"].post(f"/api/v1/keys/{key_id}/rotate/", {}).status_code == 200
    assert user.post(f"{PAYMENTS}/{operation}/", body).status_code == 200


def test_a_context_with_a_nul_character_works_and_is_audited(chain: Any) -> None:
    user = chain()["user"]
    context = {"weird": "a\u0000b"}
    made = user.post(f"{PAYMENTS}/generate-data-key/", {"context": context})
    assert made.status_code == 200
    back = user.post(
        f"{PAYMENTS}/decrypt-data-key/",
        {"ciphertext": made.json_body["ciphertext"], "context": context},
    )
    assert back.status_code == 200
    from django_tenants.utils import schema_context

    from apps.audit.services import audit_verify

    with schema_context("t_acme"):
        assert audit_verify()["ok"]


def test_a_warm_data_key_request_stays_within_its_query_budget(chain: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    user = chain()["user"]
    user.post(f"{PAYMENTS}/generate-data-key/", {"context": CTX})  # warm-up: loads the chain
    with CaptureQueriesContext(connection) as queries:
        assert user.post(f"{PAYMENTS}/generate-data-key/", {"context": CTX}).status_code == 200
    statements = [q["sql"] for q in queries.captured_queries if not q["sql"].startswith("SET ")]
    # Django: the tenant's domain, the token, and the audit event; the data plane: the audit
    # event alone (its insert checks the cached tenant and token). Never the key tables.
    assert len(statements) == (1 if isinstance(user.client, PlaneClient) else 3), statements
    assert not any("keychain_" in sql for sql in statements)


def test_each_tenants_events_land_in_its_own_log_when_requests_alternate(
    chain: Any, api: Any
) -> None:
    """Each event goes to the tenant of its request, also when nothing else was read in the
    tenant's schema first (an unauthenticated request)."""
    from django_tenants.utils import schema_context

    from apps.audit.models import AuditEvent, AuditPending
    from apps.audit.sealer import seal_here

    users = {slug: chain(slug)["user"] for slug in ("acme", "globex")}
    sent = {"acme": 0, "globex": 0}
    for slug in ("acme", "globex", "acme", "acme", "globex"):
        made = users[slug].post(f"{PAYMENTS}/generate-data-key/", {"context": {"t": slug}})
        assert made.status_code == 200
        assert api(slug).post(f"{PAYMENTS}/generate-data-key/", {}).status_code == 401
        sent[slug] += 1
    for slug, count in sent.items():
        with schema_context(f"t_{slug}"):
            seal_here()
            assert not AuditPending.objects.exists()
            events = AuditEvent.objects.filter(action="datakey.generate").order_by("seq")
            assert [(e.outcome, e.details.get("context")) for e in events] == [
                ("success", {"t": slug}),
                ("denied", None),
            ] * count


@pytest.mark.parametrize("where", ["context_value", "context_key", "ciphertext"])
def test_a_lone_surrogate_is_refused_as_malformed(chain: Any, where: str) -> None:
    """JSON may escape half of a UTF-16 pair ("\\ud800"); such text cannot be encoded, audited
    or stored, so it is refused as invalid input instead of failing on the way."""
    user = chain()["user"]
    made = user.post(f"{PAYMENTS}/generate-data-key/", {"context": CTX}).json_body
    body: dict[str, Any] = {"ciphertext": made["ciphertext"], "context": dict(CTX)}
    if where == "context_value":
        body["context"]["x"] = "a\ud800"
    elif where == "context_key":
        body["context"]["\udfff"] = "a"
    else:
        body["ciphertext"] = made["ciphertext"][:-4] + "\ud800"
    response = user.post(f"{PAYMENTS}/decrypt-data-key/", body)
    assert_problem(response, 400, "malformed_request")
    # Both halves of a pair make one character (U+1F600), which is fine.
    paired = {**CTX, "emoji": "\ud83d\ude00"}
    assert user.post(f"{PAYMENTS}/generate-data-key/", {"context": paired}).status_code == 200
