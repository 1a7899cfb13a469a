"""kcm_clone_schema: a clone is the migrated schema, object for object, and the DDL script it
replays is regenerated as soon as its source changes (tenants migration 0004)."""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.db.utils import DatabaseError

from apps.tenants.models import Tenant, TenantStatus

TEMPLATE = "kcm_template"

# Everything that makes up a schema, each object under its own name, with the schema's own
# name taken out: tables, columns in order with types, defaults, identities and comments,
# constraints, indexes, triggers and sequences with their options and owners.
_STRUCTURE = """
SELECT concat_ws(' ', 'table', c.relname, c.relpersistence, c.reloptions, c.reltoastrelid <> 0,
                 obj_description(c.oid, 'pg_class'))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind = 'r'
UNION ALL
SELECT concat_ws(' ', 'column', c.relname, a.attname,
                 rank() OVER (PARTITION BY c.oid ORDER BY a.attnum),
                 format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity,
                 a.attgenerated, a.attcollation, a.attstorage, a.attcompression,
                 pg_get_expr(d.adbin, d.adrelid), col_description(c.oid, a.attnum))
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = %(schema)s AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT concat_ws(' ', 'constraint', c.relname, con.conname, con.contype,
                 pg_get_constraintdef(con.oid), con.convalidated, con.condeferrable,
                 con.condeferred)
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %(schema)s
UNION ALL
SELECT concat_ws(' ', 'index', ic.relname, pg_get_indexdef(i.indexrelid), i.indisprimary,
                 i.indisunique, i.indisvalid)
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace WHERE n.nspname = %(schema)s
UNION ALL
SELECT concat_ws(' ', 'trigger', c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled)
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND NOT t.tgisinternal
UNION ALL
SELECT concat_ws(' ', 'sequence', c.relname, format_type(s.seqtypid, NULL), s.seqstart,
                 s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
                 (SELECT concat_ws('.', tc.relname, a.attname, d.deptype) FROM pg_depend d
                  JOIN pg_class tc ON tc.oid = d.refobjid
                  JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                    AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %(schema)s
"""
# A partial index's predicate is re-parsed when cloned (as pg_dump's would be): the same
# condition, printed with its casts placed differently. Compare predicates without casts.
_CASTS = re.compile(r"::[a-z]+(?: varying| with(?:out)? time zone)?(?:\[\])?|[()]")


def structure(schema: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(_STRUCTURE, {"schema": schema})
        rows = [row[0].replace(f"{schema}.", "S.") for row in cursor.fetchall()]
    normal = []
    for row in rows:
        if row.startswith("index ") and " WHERE " in row:
            head, predicate = row.split(" WHERE ", 1)
            row = f"{head} WHERE {_CASTS.sub('', predicate)}"
        normal.append(row)
    return sorted(normal)


def clone(source: str, target: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT public.kcm_clone_schema(%s, %s)", [source, target])


def cached_fingerprint(source: str) -> str | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT fingerprint FROM public.kcm_clone_script WHERE source = %s", [source]
        )
        row = cursor.fetchone()
    return row[0] if row else None


def test_a_clone_is_the_migrated_schema_object_for_object(db: None) -> None:
    Tenant.objects.create(
        slug="migrated", name="m", schema_name="t_migrated", status=TenantStatus.PROVISIONING
    )
    with connection.cursor() as cursor:
        cursor.execute('CREATE SCHEMA "t_migrated"')
    call_command("migrate_schemas", schema_name="t_migrated", interactive=False, verbosity=0)
    connection.set_schema_to_public()  # type: ignore[attr-defined]
    clone(TEMPLATE, "t_cloned")

    migrated = structure("t_migrated")
    assert structure("t_cloned") == migrated
    assert len(migrated) > 200
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT array_agg(name ORDER BY id) FROM t_cloned.django_migrations)"
            " = (SELECT array_agg(name ORDER BY id) FROM t_migrated.django_migrations)"
        )
        assert cursor.fetchone()[0]


def test_the_script_is_regenerated_when_the_template_migrates(db: None) -> None:
    clone(TEMPLATE, "t_before")
    before = cached_fingerprint(TEMPLATE)
    assert before is not None
    # What a migration of the template does: change its structure and record itself.
    with connection.cursor() as cursor:
        cursor.execute(
            f"ALTER TABLE {TEMPLATE}.keychain_customerkey"
            " ADD COLUMN clone_test integer NOT NULL DEFAULT 7 CHECK (clone_test > 0);"
            f" CREATE INDEX clone_test_idx ON {TEMPLATE}.keychain_customerkey (clone_test);"
            f" INSERT INTO {TEMPLATE}.django_migrations (app, name, applied)"
            " VALUES ('keychain', '9999_clone_test', now())"
        )
    clone(TEMPLATE, "t_after")

    after = structure("t_after")
    assert after == structure(TEMPLATE)
    assert after != structure("t_before")
    assert any("clone_test_idx" in row for row in after)
    assert cached_fingerprint(TEMPLATE) != before

    # Unapplying the migration and applying it again (a new `applied` time) counts too.
    with connection.cursor() as cursor:
        cursor.execute(
            f"DROP INDEX {TEMPLATE}.clone_test_idx;"
            f" DELETE FROM {TEMPLATE}.django_migrations WHERE name = '9999_clone_test';"
            f" INSERT INTO {TEMPLATE}.django_migrations (app, name, applied)"
            " VALUES ('keychain', '9999_clone_test', now() + interval '1 second')"
        )
    clone(TEMPLATE, "t_again")
    assert structure("t_again") == structure(TEMPLATE)
    assert not any("clone_test_idx" in row for row in structure("t_again"))


def test_it_copies_what_migrations_may_create_beyond_the_template(db: None) -> None:
    """Foreign-key cycles, self references, NOT VALID checks, comments, collations, storage,
    generated and identity columns with their own sequence options."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE SCHEMA clone_src;
            CREATE TABLE clone_src.django_migrations (
                id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                app varchar(255) NOT NULL, name varchar(255) NOT NULL,
                applied timestamptz NOT NULL);
            INSERT INTO clone_src.django_migrations (app, name, applied)
                VALUES ('x', '0001', now());
            CREATE TABLE clone_src.a (
                id integer GENERATED ALWAYS AS IDENTITY
                    (SEQUENCE NAME clone_src.a_ids START WITH 100 INCREMENT BY 5 CACHE 3),
                name text COLLATE "C" NOT NULL DEFAULT 'x.clone_src',
                upper_name text GENERATED ALWAYS AS (upper(name)) STORED,
                parent_id integer, b_id integer,
                CONSTRAINT a_pk PRIMARY KEY (id),
                CONSTRAINT a_parent FOREIGN KEY (parent_id) REFERENCES clone_src.a (id));
            CREATE TABLE clone_src.b (
                id integer PRIMARY KEY,
                a_id integer CONSTRAINT b_to_a REFERENCES clone_src.a (id)
                    DEFERRABLE INITIALLY DEFERRED) WITH (fillfactor = 70);
            ALTER TABLE clone_src.a ADD CONSTRAINT a_to_b FOREIGN KEY (b_id)
                REFERENCES clone_src.b (id) ON DELETE SET NULL;
            ALTER TABLE clone_src.a ADD CONSTRAINT a_name_long CHECK (length(name) > 3) NOT VALID;
            ALTER TABLE clone_src.a ALTER COLUMN name SET STORAGE EXTERNAL;
            COMMENT ON TABLE clone_src.a IS 'table a';
            COMMENT ON COLUMN clone_src.a.name IS 'it''s a name';
            CREATE UNIQUE INDEX a_lower ON clone_src.a (lower(name)) WHERE parent_id IS NULL;
            """
        )
    clone("clone_src", "clone_dst")
    assert structure("clone_dst") == structure("clone_src")
    assert len(structure("clone_src")) > 20
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO clone_dst.a (name) VALUES ('abcd') RETURNING id")
        assert cursor.fetchone()[0] == 100


@pytest.mark.parametrize(
    "ddl",
    [
        f"CREATE VIEW {TEMPLATE}.clone_view AS SELECT 1 AS one",
        f"CREATE SEQUENCE {TEMPLATE}.clone_counter",
        f"CREATE TYPE {TEMPLATE}.clone_mood AS ENUM ('ok')",
    ],
)
def test_it_refuses_what_it_could_not_copy(db: None, ddl: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"{ddl}; INSERT INTO {TEMPLATE}.django_migrations (app, name, applied)"
            " VALUES ('keychain', '9999_clone_refusal', now())"
        )
    with pytest.raises(DatabaseError, match="cannot copy"), transaction.atomic():
        clone(TEMPLATE, "t_refused")
