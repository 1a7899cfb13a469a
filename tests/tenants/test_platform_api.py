"""Platform API: tenants are created from the template and move through their lifecycle."""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.db import connection
from django_tenants.utils import schema_exists

from apps.core.roles import Role
from apps.tenants.models import Tenant
from tests.helpers import assert_problem

OPS = ("platform", Role.PLATFORM_OPERATOR)


def test_it_creates_a_tenant_with_the_templates_tables(api: Any) -> None:
    response = api(*OPS).post("/api/v1/platform/tenants/", {"slug": "initech", "name": "Initech"})
    assert response.status_code == 201, response.content
    assert response.json_body["status"] == "ACTIVE"
    assert response.json_body["domain"] == "initech.localhost"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1",
            ["t_initech"],
        )
        tables = [row[0] for row in cursor.fetchall()]
    assert "keychain_servicekey" in tables and "django_migrations" in tables


def test_the_clone_matches_the_template_constraint_for_constraint(db: None) -> None:
    def shape(schema: str) -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT conname || ' ' || contype::text || ' ' ||"
                " replace(pg_get_constraintdef(c.oid), %s, 'S') FROM pg_constraint c"
                " JOIN pg_namespace n ON n.oid = c.connamespace WHERE nspname = %s"
                # A partial index's predicate is re-parsed when cloned (as pg_dump's would be):
                # the same condition, printed with other casts; compare up to it.
                " UNION ALL SELECT indexname || ' ' || split_part(replace(indexdef, %s, 'S'), ' WHERE ', 1)"
                " FROM pg_indexes WHERE schemaname = %s ORDER BY 1",
                [schema + ".", schema, schema + ".", schema],
            )
            return [row[0] for row in cursor.fetchall()]

    assert shape("t_acme") == shape("kcm_template")
    assert len(shape("t_acme")) > 10


def test_it_refuses_bad_and_duplicate_slugs(api: Any) -> None:
    client = api(*OPS)
    assert_problem(client.post("/api/v1/platform/tenants/", {"slug": "acme"}), 409, "tenant_exists")
    for slug in ("A", "-x-", "public", "x" * 41, "has_underscore"):
        assert_problem(
            client.post("/api/v1/platform/tenants/", {"slug": slug}), 400, "invalid_slug"
        )


def test_suspend_and_resume(api: Any) -> None:
    ops = api(*OPS)
    response = ops.post("/api/v1/platform/tenants/acme/suspend/", {"reason": "unpaid invoice"})
    assert response.status_code == 200 and response.json_body["status"] == "SUSPENDED"
    blocked = api("acme", Role.TENANT_ADMIN).get("/api/v1/me/")
    assert_problem(blocked, 403, "tenant_suspended")
    assert "unpaid invoice" in blocked.json_body["detail"]
    page = api("acme").get("/login/")
    assert page.status_code == 403 and b"suspended" in page.content
    assert_problem(
        ops.post("/api/v1/platform/tenants/acme/suspend/", {}), 409, "invalid_transition"
    )
    assert ops.post("/api/v1/platform/tenants/acme/resume/", {}).json_body["status"] == "ACTIVE"
    assert api("acme", Role.TENANT_ADMIN).get("/api/v1/me/").status_code == 200


def test_terminate_drops_the_schema_and_revokes_access(api: Any) -> None:
    ops = api(*OPS)
    token = api("globex", Role.KEY_USER)
    response = ops.post("/api/v1/platform/tenants/globex/terminate/", {"reason": "contract ended"})
    assert response.status_code == 200 and response.json_body["status"] == "TERMINATED"
    assert not schema_exists("t_globex")
    assert token.get("/api/v1/me/").status_code == 404  # the domain is gone
    assert_problem(
        ops.post("/api/v1/platform/tenants/globex/resume/", {}), 409, "invalid_transition"
    )


def test_unknown_tenant_is_a_clear_404(api: Any) -> None:
    assert_problem(api(*OPS).get("/api/v1/platform/tenants/nope/"), 404, "tenant_not_found")


def test_list_is_paginated_and_filtered(api: Any) -> None:
    ops = api(*OPS)
    page = ops.get("/api/v1/platform/tenants/?page_size=1")
    assert page.status_code == 200
    assert len(page.json_body["results"]) == 1 and page.json_body["next"]
    active = ops.get("/api/v1/platform/tenants/?status=ACTIVE").json_body["results"]
    assert {t["slug"] for t in active} >= {"acme", "globex"}
    assert_problem(ops.get("/api/v1/platform/tenants/?status=BOGUS"), 400, "invalid_filter")


def test_management_commands_drive_the_same_lifecycle(db: None) -> None:
    call_command("kcm_tenant", "create", "hooli")
    assert Tenant.objects.get(slug="hooli").status == "ACTIVE"
    call_command("kcm_tenant", "suspend", "hooli", "--reason", "audit")
    assert Tenant.objects.get(slug="hooli").status == "SUSPENDED"
    call_command("kcm_tenant", "resume", "hooli")
    call_command("kcm_tenant", "terminate", "hooli")
    assert Tenant.objects.get(slug="hooli").status == "TERMINATED"
    assert not schema_exists("t_hooli")
