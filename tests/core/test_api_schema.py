"""The OpenAPI schema served at /api/schema/ documents the API of the host that serves it,
with the problem+json refusals every operation can answer (tests/fuzz holds the live API to
it with generated requests)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.conf import settings

from apps.core.errors import PROBLEM_CONTENT_TYPE
from tests.helpers import Api


def _schema(host: str) -> dict[str, Any]:
    response = Api(host).get("/api/schema/?format=json")
    assert response.status_code == 200, response.content[:500]
    return dict(json.loads(response.content))


@pytest.mark.django_db
def test_each_host_documents_its_own_api() -> None:
    # Found by tests/fuzz: every host served the tenant URLs' schema (DRF enumerates
    # ROOT_URLCONF), so the platform's endpoints were missing from the platform's schema.
    platform = _schema("localhost")["paths"]
    tenant = _schema("acme.localhost")["paths"]
    assert "/api/v1/platform/tenants/" in platform
    assert "/api/v1/service-keys/" not in platform
    assert "/api/v1/service-keys/" in tenant
    assert "/api/v1/platform/tenants/" not in tenant
    assert "/api/schema/" not in platform and "/api/schema/" not in tenant


@pytest.mark.django_db
def test_refusals_are_documented_as_problems() -> None:
    schema = _schema("acme.localhost")
    operation = schema["paths"]["/api/v1/service-keys/{name}/encrypt/"]["post"]
    for status in ("400", "401", "403", "404", "413", "415", "429"):
        content = operation["responses"][status]["content"]
        assert list(content) == [PROBLEM_CONTENT_TYPE], (status, content)
    problem = schema["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "code", "detail"} <= set(problem["required"])
    listing = schema["paths"]["/api/v1/tokens/"]["get"]["responses"]
    assert "400" in listing  # a bad cursor
    assert "404" not in listing
    name = schema["paths"]["/api/v1/service-keys/{name}/"]["get"]["parameters"][0]
    assert name["schema"]["pattern"] == "^[-a-zA-Z0-9_]+$"  # what <slug:name> matches


@pytest.mark.django_db
def test_request_bodies_are_the_ones_each_action_takes() -> None:
    # Found by tests/fuzz: encrypt was documented with generate-data-key's body and disable
    # with schedule-deletion's, and extra fields looked allowed where they are refused.
    schema = _schema("acme.localhost")

    def body_of(path: str) -> dict[str, Any]:
        content = schema["paths"][path]["post"].get("requestBody", {}).get("content", {})
        ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
        return dict(schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]) if ref else {}

    encrypt = body_of("/api/v1/service-keys/{name}/encrypt/")
    assert "plaintext" in encrypt["properties"] and encrypt["additionalProperties"] is False
    assert "ciphertext" in body_of("/api/v1/service-keys/{name}/decrypt/")["properties"]
    assert "pending_days" not in body_of("/api/v1/keys/{key_id}/disable/").get("properties", {})
    cancel = "/api/v1/keys/{key_id}/versions/{version}/cancel-deletion/"
    assert "pending_days" not in body_of(cancel).get("properties", {})
    pending_days = body_of("/api/v1/keys/{key_id}/schedule-deletion/")["properties"]["pending_days"]
    assert (pending_days["minimum"], pending_days["maximum"]) == (
        settings.KCM_DELETION_MIN_DAYS,
        settings.KCM_DELETION_MAX_DAYS,
    )


@pytest.mark.django_db
def test_created_and_accepted_statuses_are_the_ones_answered() -> None:
    tenant = _schema("acme.localhost")["paths"]
    platform = _schema("localhost")["paths"]
    assert "201" in tenant["/api/v1/tokens/"]["post"]["responses"]
    assert "201" in platform["/api/v1/platform/tenants/"]["post"]["responses"]
    assert "202" in tenant["/api/v1/audit/exports/"]["post"]["responses"]
    assert {"200", "202"} <= set(
        tenant["/api/v1/rotation/keys/{key_id}/rotate/"]["post"]["responses"]
    )
