"""The OpenAPI schema every API view gets: its own answers plus the problem+json refusals
that every KCM view can give (apps.core.errors renders them), so that the schema documents
what the API really answers (tests/fuzz holds it to that)."""

from __future__ import annotations

import re
from typing import Any

from django.urls.converters import get_converters
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent

from apps.core.errors import PROBLEM_CONTENT_TYPE

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem; `code` is stable, `errors` names invalid fields.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {},
    },
    "required": ["type", "title", "status", "code", "detail"],
    "additionalProperties": True,
}

_REASONS = {
    "400": "The request is not valid (`validation_error`, `malformed_request`, ...)",
    "401": "No or an unknown, expired or revoked credential",
    "403": "The credential's role or grant does not allow this",
    "404": "No such object in this tenant",
    "409": "The object's state does not allow this",
    "413": "The request body is too large",
    "415": "The request body is not JSON",
    "503": "A dependency is unavailable (`broker_unavailable`, ...); retry after `Retry-After`",
    "429": "Rate limit exceeded (`throttled`, with `Retry-After`)",
}


class KcmAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, adding the refusals each operation can answer, closing
    the request bodies that refuse unknown fields (`rejects_unknown_fields`), and asking views
    that take a body per action which one (`schema_request`); a view lists refusals beyond the
    usual ones in `schema_refusals` ({method: statuses})."""

    def get_request_serializer(self) -> Any:
        # A view served under several actions (as_view(action=...)) may take a different body
        # for each: it says which through `schema_request()`.
        per_action = getattr(self.view, "schema_request", None)
        if callable(per_action):
            return per_action()
        return super().get_request_serializer()

    def _resolve_path_parameters(self, variables: Any) -> Any:
        # `<slug:name>` and `<str:x>` come out as any string; say what the URL matches, so
        # that clients (and generated requests) know what reaches the view.
        parameters = super()._resolve_path_parameters(variables)
        for parameter in parameters:
            schema = parameter["schema"]
            if schema.get("type") != "string" or {"pattern", "format", "enum"} & set(schema):
                continue
            route = re.search(rf"<(\w+):{re.escape(parameter['name'])}>", self.path_regex)
            converter = get_converters().get(route.group(1)) if route else None
            if converter is not None:
                schema["pattern"] = f"^{converter.regex}$"
        return parameters

    def _map_serializer(self, serializer: Any, direction: Any, *args: Any, **kwargs: Any) -> Any:
        schema = super()._map_serializer(serializer, direction, *args, **kwargs)
        if getattr(serializer, "rejects_unknown_fields", False) and schema.get("type") == "object":
            schema["additionalProperties"] = False
        return schema

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation: dict[str, Any] | None = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        component = ResolvedComponent(
            name="Problem", type=ResolvedComponent.SCHEMA, object="Problem", schema=PROBLEM_SCHEMA
        )
        self.registry.register_on_missing(component)
        responses = operation.setdefault("responses", {})
        extra = getattr(self.view, "schema_refusals", {}).get(self.method, ())
        for status in [*_error_statuses(self.method, operation), *extra]:
            responses.setdefault(
                status,
                {
                    "description": _REASONS[status],
                    "content": {PROBLEM_CONTENT_TYPE: {"schema": component.ref}},
                },
            )
        return operation


def _error_statuses(method: str, operation: dict[str, Any]) -> list[str]:
    in_path_or_query = {p.get("in") for p in operation.get("parameters", [])}
    statuses = ["401", "403", "429"]
    if method != "GET" or "query" in in_path_or_query:
        statuses.append("400")  # a body that does not parse or validate, or a bad parameter
    if method != "GET" or "path" in in_path_or_query:
        statuses.append("404")  # the object in the path, or one the body names
    if method in ("POST", "PUT", "PATCH"):
        statuses += ["413", "415"]
    if method != "GET":
        statuses.append("409")
    return statuses
