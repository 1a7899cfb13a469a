"""Provisioning a tenant: cloning the migrated template schema (what KCM does) against
replaying every migration into an empty schema (what django-tenants does by default),
interleaved in one run on one scratch database.

    python -m bench.provisioning        # BENCH_TENANTS (default 100 of each)

Both paths register the tenant, build its schema, add its domain and activate it. At the end
one cloned and one migrated schema are compared (tables, columns, constraints, indexes).
django-tenants closes the database connection after migrating a schema, so the migration path
always starts on a new connection, and so does the first clone of each round (10 of them).
The figures depend on the PostgreSQL version, which the JSON line names: up to 16 each index
build is flushed to disk on its own, about 50 per tenant.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Callable

from bench.common import django_setup, django_teardown, report
from tests.e2e.stack import LiveStack

_CASTS = re.compile(r"::[a-z]+(?: varying| with(?:out)? time zone)?(?:\[\])?|[()]")
TENANTS = int(os.environ.get("BENCH_TENANTS", "100"))
ROUNDS = min(10, TENANTS)

# Everything that makes up a schema's structure, with the schema's own name taken out.
_STRUCTURE = """
SELECT 'column', c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'constraint', c.relname || ' ' || con.conname || ' ' || pg_get_constraintdef(con.oid)
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %(schema)s
UNION ALL
SELECT 'index', indexname || ' ' || replace(indexdef, %(schema)s || '.', '')
FROM pg_indexes WHERE schemaname = %(schema)s
"""


def provision_by_migration(slug: str) -> None:
    """What django-tenants does for a tenant with auto_create_schema: an empty schema, then
    every tenant migration replayed into it."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from apps.tenants.models import Domain, Tenant, TenantStatus

    schema = "t_" + slug.replace("-", "_")
    tenant = Tenant.objects.create(
        slug=slug, name=slug, schema_name=schema, status=TenantStatus.PROVISIONING
    )
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{schema}"')
    call_command("migrate_schemas", schema_name=schema, interactive=False, verbosity=0)
    Domain.objects.create(
        tenant=tenant, domain=f"{slug}.{settings.KCM_BASE_DOMAIN}", is_primary=True
    )
    tenant.status = TenantStatus.ACTIVE
    tenant.save(update_fields=["status", "updated_at"])


def provision_by_clone(slug: str) -> None:
    from apps.tenants.services import tenant_create

    tenant_create(slug=slug, name=slug)


def structure(schema: str) -> set[tuple[str, str]]:
    """The schema's columns, constraints and indexes as text, with casts and parentheses
    removed: PostgreSQL prints a re-parsed predicate such as `state = ANY (ARRAY[...])` with
    its casts placed differently from the original, though it means the same."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(_STRUCTURE, {"schema": schema})
        rows = cursor.fetchall()
    return {(kind, _CASTS.sub("", text.replace(f"{schema}.", ""))) for kind, text in rows}


def server_version() -> str:
    """The PostgreSQL version: up to 16 every index build is flushed to disk on its own, which
    costs the clone (about 50 indexes per tenant) more than the migration."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        row = cursor.fetchone()
    return str(row[0]).split()[0] if row else "?"


def main() -> None:
    paths: dict[str, Callable[[str], None]] = {
        "clone": provision_by_clone,
        "migrate": provision_by_migration,
    }
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    with LiveStack(web_workers=1, celery_pool=None) as stack:
        django_setup(stack)
        try:
            for round_ in range(ROUNDS):
                order = list(paths) if round_ % 2 == 0 else list(reversed(paths))
                for name in order:
                    for index in range(TENANTS // ROUNDS):
                        slug = f"{name}-{round_}-{index}"
                        started = time.perf_counter()
                        paths[name](slug)
                        seconds[name].append(time.perf_counter() - started)
            cloned, migrated = structure("t_clone_0_0"), structure("t_migrate_0_0")
            server = server_version()
        finally:
            django_teardown()
    clone_ms = statistics.mean(seconds["clone"]) * 1000
    migrate_ms = statistics.mean(seconds["migrate"]) * 1000
    speedup = migrate_ms / clone_ms
    differences = sorted(cloned ^ migrated)
    report(
        [
            f"provisioning: {len(seconds['clone'])} tenants by template clone and "
            f"{len(seconds['migrate'])} by migration, interleaved in {ROUNDS} rounds, "
            f"on PostgreSQL {server}",
            f"  clone:   mean {clone_ms:7.1f} ms, median "
            f"{statistics.median(seconds['clone']) * 1000:7.1f} ms per tenant",
            f"  migrate: mean {migrate_ms:7.1f} ms, median "
            f"{statistics.median(seconds['migrate']) * 1000:7.1f} ms per tenant",
            f"  clone_speedup {speedup:.1f}x by means (target >= 5)",
            f"  cloned and migrated schemas identical: {not differences} "
            f"({len(cloned)} structure items){'' if not differences else differences[:5]}",
        ],
        {
            "bench": "provisioning",
            "tenants": len(seconds["clone"]),
            "clone_ms": round(clone_ms, 2),
            "migrate_ms": round(migrate_ms, 2),
            "clone_speedup": round(speedup, 2),
            "clone_median_ms": round(statistics.median(seconds["clone"]) * 1000, 2),
            "migrate_median_ms": round(statistics.median(seconds["migrate"]) * 1000, 2),
            "schemas_identical": not differences,
            "postgres": server,
        },
    )


if __name__ == "__main__":
    main()
