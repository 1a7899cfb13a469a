"""What the audit-coverage tests share: a view of one schema's log since a mark, the action a
route's view audits, and every API route and method to check (from the registered URLs)."""

from __future__ import annotations

from typing import Any

import pytest
from django_tenants.utils import schema_context

from apps.audit.models import AuditEvent
from apps.audit.sealer import seal_here
from tests.urlmap import PUBLIC, Route, platform_routes, tenant_routes

CTX = {"order": "42"}


def _events(schema: str) -> list[AuditEvent]:
    with schema_context(schema):
        seal_here()  # requests commit their events as pending; search and verify seal first
        return list(AuditEvent.objects.order_by("seq"))


class Log:
    """Events appended to one schema's log since `mark()`."""

    def __init__(self, schema: str):
        self.schema = schema
        self.mark()

    def mark(self) -> None:
        self.start = len(_events(self.schema))

    def new(self) -> list[AuditEvent]:
        return _events(self.schema)[self.start :]


def expected_action(route: Route, method: str) -> str:
    view = route.view_class
    initkwargs = getattr(route.callback, "view_initkwargs", {})
    instance = view(**initkwargs)
    return instance.audit_actions.get(method, instance.audit_action) or "api.request"


def _api_cases() -> list[Any]:
    cases = []
    for slug, routes in (("acme", tenant_routes()), ("platform", platform_routes())):
        for route in routes:
            if route.view_class is None or route.name in PUBLIC:
                continue
            for method in route.methods:
                cases.append(pytest.param(slug, route, method, id=f"{slug} {method} {route.path}"))
    return cases
