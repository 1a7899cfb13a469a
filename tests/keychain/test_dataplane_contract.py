"""The data plane keeps Django's contract: each request is sent through both paths, and the two
answers (status, headers, problem codes, body shape) and the two audit events must agree.

`Api` on Django's test client is Django's path; on `PlaneClient` the data plane (which hands
what it does not serve to Django, as in production). Both run in the same test transaction.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django_tenants.utils import schema_context

from apps.audit.models import AuditPending
from apps.core.roles import Role
from apps.tenants import services
from apps.tenants.grants import KeyGrant
from apps.tenants.tokens import api_token_create, api_token_revoke
from tests.helpers import Api, host_of
from tests.keychain.dataplanekit import PlaneClient

CTX = {"tenant_record": "invoice-42", "purpose": "billing"}
PAYMENTS = "/api/v1/service-keys/payments"
# Values that differ between two correct answers: fresh keys and ciphertexts, timestamps.
RANDOM_FIELDS = {"plaintext", "ciphertext"}
RANDOM_HEADERS = {"X-Request-Id", "Content-Length", "X-KCM-Worker"}


class Pair:
    """The same caller on both paths."""

    def __init__(self, host: str, token: str | None, schema: str) -> None:
        self.django = Api(host, token, Client(HTTP_HOST=host))
        self.plane_client = PlaneClient(HTTP_HOST=host)
        self.plane = Api(host, token, self.plane_client)
        self.schema = schema

    def both(self, path: str, body: Any = None, **kw: Any) -> tuple[Any, Any, Any, Any]:
        """(django response, django event, plane response, plane event)."""
        answers = []
        for api in (self.django, self.plane):
            before = self._last_event_id()
            response = api.post(path, body, X_REQUEST_ID="contract-1", **kw)
            answers += [response, self._events_since(before)]
        return answers[0], answers[1], answers[2], answers[3]

    def _last_event_id(self) -> int:
        with schema_context(self.schema):
            last = AuditPending.objects.order_by("-id").values_list("id", flat=True).first()
        connection.set_schema_to_public()  # type: ignore[attr-defined]
        return last or 0

    def _events_since(self, after: int) -> list[dict[str, Any]]:
        with schema_context(self.schema):
            bodies = list(
                AuditPending.objects.filter(id__gt=after)
                .order_by("id")
                .values_list("body", flat=True)
            )
        connection.set_schema_to_public()  # type: ignore[attr-defined]
        events = [json.loads(body) for body in bodies]
        for event in events:
            event.pop("occurred_at")
        return events


def _shape(value: Any) -> Any:
    """A body with its random values replaced by their kind and length."""
    if isinstance(value, dict):
        return {
            k: (("b64", len(v)) if k in RANDOM_FIELDS and isinstance(v, str) else _shape(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return value


def assert_same(django: Any, django_events: Any, plane: Any, plane_events: Any) -> None:
    assert plane.status_code == django.status_code, (plane.content[:300], django.content[:300])
    assert _shape(plane.json_body) == _shape(django.json_body)
    headers = {k: v for k, v in django.items() if k not in RANDOM_HEADERS}
    assert {k: v for k, v in plane.items() if k not in RANDOM_HEADERS} == headers
    assert plane["X-Request-Id"] == django["X-Request-Id"] == "contract-1"
    assert plane_events == django_events
    assert len(plane_events) == 1, plane_events


@pytest.fixture
def pair(world: Any, chain: Any) -> Callable[..., Pair]:
    chain("acme")

    def make(role: str | None = Role.KEY_USER, *, slug: str = "acme", token: str = "") -> Pair:
        raw = token or (world.tokens[(slug, role)] if role else None)
        return Pair(host_of("acme"), raw, world.tenants["acme"].schema_name)

    return make


def _served_fast(pair: Pair) -> bool:
    return pair.plane_client.served[-1]


CASES: list[tuple[str, str, Any]] = [
    ("generate", "generate-data-key/", {"context": CTX}),
    ("generate-wrapped-only", "generate-data-key/", {"include_plaintext": False}),
    ("wrong-type", "generate-data-key/", {"include_plaintext": "yes"}),
    ("unknown-field", "generate-data-key/", {"colour": "red"}),
    ("context-not-object", "generate-data-key/", {"context": ["a"]}),
    ("not-an-object", "generate-data-key/", [1, 2]),
    ("encrypt", "encrypt/", {"plaintext": base64.b64encode(b"hi").decode(), "context": CTX}),
    ("encrypt-bad-base64", "encrypt/", {"plaintext": "no!"}),
    ("decrypt-garbage", "decrypt-data-key/", {"ciphertext": "AAAA", "context": CTX}),
    ("batch", "generate-data-key/batch/", {"items": [{"context": CTX}, {"context": 5}]}),
    ("batch-empty", "generate-data-key/batch/", {"items": []}),
    ("batch-bad-item", "encrypt/batch/", {"items": [{"plaintext": 7}, {"x": 1}]}),
]


@pytest.mark.parametrize(("label", "path", "body"), CASES, ids=[c[0] for c in CASES])
def test_both_paths_answer_alike(pair: Any, label: str, path: str, body: Any) -> None:
    both = pair()
    assert_same(*both.both(f"{PAYMENTS}/{path}", body))
    assert _served_fast(both)


def test_an_empty_json_body_is_an_empty_object_on_both(pair: Any) -> None:
    both = pair()
    result = both.both(f"{PAYMENTS}/generate-data-key/", raw=b"")
    assert_same(*result)
    assert result[2].status_code == 200


def test_malformed_json_is_a_400_on_both(pair: Any) -> None:
    both = pair()
    result = both.both(f"{PAYMENTS}/generate-data-key/", raw=b'{"context": ')
    assert_same(*result)
    assert result[2].json_body["code"] == "malformed_request"
    assert _served_fast(both)


def test_an_unknown_service_key_is_refused_alike(pair: Any) -> None:
    both = pair()
    result = both.both("/api/v1/service-keys/nope/generate-data-key/", {})
    assert_same(*result)
    assert result[2].status_code in (403, 404)


def test_a_foreign_tenants_token_is_refused_alike(pair: Any, world: Any) -> None:
    both = pair(token=world.tokens[("globex", Role.KEY_USER)])
    result = both.both(f"{PAYMENTS}/generate-data-key/", {})
    assert_same(*result)
    assert result[2].json_body["code"] == "wrong_tenant"


def test_a_wrong_role_is_refused_alike(pair: Any) -> None:
    both = pair(Role.KEY_ADMIN)
    result = both.both(f"{PAYMENTS}/generate-data-key/", {})
    assert_same(*result)
    assert result[2].json_body["code"] == "role_not_allowed"


def test_a_key_outside_the_grant_is_refused_alike(pair: Any, world: Any) -> None:
    acme = world.tenants["acme"]
    _, raw = api_token_create(
        tenant=acme,
        name="ledger only",
        role=Role.KEY_USER,
        created_by_id=None,
        key_grant=KeyGrant.parse({"service_keys": ["ledger"], "context": {"app": None}}),
    )
    both = pair(token=raw)
    result = both.both(f"{PAYMENTS}/generate-data-key/", {})
    assert_same(*result)
    assert result[2].json_body["code"] == "key_not_granted"
    result = both.both("/api/v1/service-keys/ledger/generate-data-key/", {"context": CTX})
    assert_same(*result)
    assert result[2].json_body["code"] == "context_not_granted"


def test_tampered_ciphertext_is_refused_alike(pair: Any) -> None:
    both = pair()
    made = both.plane.post(f"{PAYMENTS}/generate-data-key/", {"context": CTX}).json_body
    raw = bytearray(base64.b64decode(made["ciphertext"]))
    raw[-5] ^= 0x01
    body = {"ciphertext": base64.b64encode(bytes(raw)).decode(), "context": CTX}
    result = both.both(f"{PAYMENTS}/decrypt-data-key/", body)
    assert_same(*result)
    assert result[2].json_body["code"] == "ciphertext_invalid"


def test_an_oversize_body_is_refused_alike(pair: Any, settings: Any) -> None:
    settings.KCM_MAX_BODY_BYTES = 2048
    both = pair()
    big = {"plaintext": "A" * 4000}
    django = both.django.post(f"{PAYMENTS}/encrypt/", big)
    plane = both.plane.post(f"{PAYMENTS}/encrypt/", big)
    assert (plane.status_code, plane.json_body["code"]) == (413, "payload_too_large")
    assert django.status_code == 413


def test_throttling_answers_429_with_retry_after_alike(pair: Any, settings: Any) -> None:
    from apps.core.throttling import buckets

    settings.KCM_API_RATE_PER_TOKEN = "1/min"
    for path in ("django", "plane"):
        buckets.reset()
        both = pair()
        api = getattr(both, path)
        assert api.post(f"{PAYMENTS}/generate-data-key/", {}).status_code == 200
    buckets.reset()
    both = pair()
    both.django.post(f"{PAYMENTS}/generate-data-key/", {})
    django = both.django.post(f"{PAYMENTS}/generate-data-key/", {}, X_REQUEST_ID="contract-1")
    buckets.reset()
    both.plane.post(f"{PAYMENTS}/generate-data-key/", {})
    plane = both.plane.post(f"{PAYMENTS}/generate-data-key/", {}, X_REQUEST_ID="contract-1")
    assert plane.status_code == django.status_code == 429
    assert plane["Retry-After"] == django["Retry-After"]
    assert plane.json_body == django.json_body
    assert _served_fast(both)


def test_a_token_revoked_after_use_is_refused(pair: Any, world: Any) -> None:
    acme = world.tenants["acme"]
    token, raw = api_token_create(
        tenant=acme,
        name="short-lived",
        role=Role.KEY_USER,
        created_by_id=None,
        key_grant=KeyGrant.everything(),
    )
    both = pair(token=raw)
    assert both.plane.post(f"{PAYMENTS}/generate-data-key/", {}).status_code == 200
    assert _served_fast(both)  # now cached in this process
    api_token_revoke(tenant=acme, token_id=token.pk)
    result = both.both(f"{PAYMENTS}/generate-data-key/", {})
    assert_same(*result)
    assert result[2].json_body["code"] == "invalid_token"
    again = both.plane.post(f"{PAYMENTS}/generate-data-key/", {})
    assert again.status_code == 401


def test_a_tenant_suspended_after_use_is_refused(pair: Any, world: Any) -> None:
    both = pair()
    assert both.plane.post(f"{PAYMENTS}/generate-data-key/", {}).status_code == 200
    services.tenant_suspend(tenant=world.tenants["acme"], reason="unpaid")
    plane = both.plane.post(f"{PAYMENTS}/generate-data-key/", {})
    django = both.django.post(f"{PAYMENTS}/generate-data-key/", {})
    assert plane.status_code == django.status_code == 403
    assert plane.json_body["code"] == django.json_body["code"] == "tenant_suspended"


def test_the_kill_switch_stops_a_cached_key_at_once(pair: Any, world: Any, chain: Any) -> None:
    both = pair()
    assert both.plane.post(f"{PAYMENTS}/generate-data-key/", {}).status_code == 200
    admin = Api(host_of("acme"), world.tokens[("acme", Role.KEY_ADMIN)])
    l1 = admin.get("/api/v1/keys/").json_body["results"][0]["id"]
    assert admin.post(f"/api/v1/keys/{l1}/disable/", {}).status_code == 200
    result = both.both(f"{PAYMENTS}/generate-data-key/", {})
    assert_same(*result)
    assert result[2].json_body["code"] == "key_disabled"


def test_after_the_kill_switch_is_heard_the_refusals_are_answered_by_the_data_plane(
    pair: Any, world: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """A process that has heard of the new key epoch (its listener, or its own revocation's
    on-commit hook as here) moves its cached route to that epoch: the refusal is answered by
    the data plane, not by a failed commit handed to Django's slower path."""
    both = pair()
    ciphertext = both.plane.post(f"{PAYMENTS}/generate-data-key/", {}).json_body["ciphertext"]
    assert both.plane_client.served == [True]
    admin = Api(host_of("acme"), world.tokens[("acme", Role.KEY_ADMIN)])
    l1 = admin.get("/api/v1/keys/").json_body["results"][0]["id"]
    with django_capture_on_commit_callbacks(execute=True):
        assert admin.post(f"/api/v1/keys/{l1}/disable/", {}).status_code == 200
    before = both._last_event_id()
    for _ in range(2):
        refused = both.plane.post(f"{PAYMENTS}/decrypt-data-key/", {"ciphertext": ciphertext})
        assert refused.status_code == 409, refused.content
        assert refused.json_body["code"] == "key_disabled"
    assert both.plane_client.served == [True, True, True]
    events = both._events_since(before)
    assert [(e["action"], e["outcome"]) for e in events] == [("datakey.decrypt", "error")] * 2


def test_other_requests_are_left_to_django(pair: Any) -> None:
    both = pair()
    assert both.plane.get(f"{PAYMENTS}/").status_code == 200
    assert both.plane.post(f"{PAYMENTS}/generate-data-key/", raw="x", content_type="text/plain")
    assert both.plane_client.served == [False, False]
