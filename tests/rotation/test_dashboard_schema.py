"""The dashboard's answer, with keys and traffic, conforms to the schema the API documents
(the fuzzer found its recent events documented as the audit API's events: two serializers
named EventOut share one OpenAPI component)."""

from __future__ import annotations

from typing import Any

import jsonschema  # type: ignore[import-untyped]
import yaml
from django.test import Client

from apps.core.roles import Role


def test_the_dashboard_answers_what_its_schema_says(api: Any, world: Any) -> None:
    admin = api("acme", Role.KEY_ADMIN)
    assert admin.post("/api/v1/customer-keys/", {"name": "root"}).status_code == 201
    assert admin.post("/api/v1/service-keys/", {"name": "payments"}).status_code == 201
    user = api("acme", Role.KEY_USER)
    assert user.post("/api/v1/service-keys/payments/generate-data-key/", {}).status_code == 200
    assert user.post("/api/v1/service-keys/nosuch/generate-data-key/", {}).status_code == 404
    body = api("acme", Role.TENANT_ADMIN).get("/api/v1/dashboard/").json_body
    assert body["recent_events"]
    document = yaml.safe_load(Client().get("/api/schema/", HTTP_HOST="acme.localhost").content)
    answer = document["paths"]["/api/v1/dashboard/"]["get"]["responses"]["200"]
    schema = {
        **answer["content"]["application/json"]["schema"],
        "components": document["components"],
    }
    jsonschema.validate(body, schema, format_checker=jsonschema.FormatChecker())
