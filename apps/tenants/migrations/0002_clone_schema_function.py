"""kcm_clone_schema(source, target): a new tenant schema as a structural copy of the template.

Replaying every migration for each new tenant is slow and grows with the project's history;
this copies the migrated template in one round trip: tables (columns, defaults, identities),
then constraints and indexes under their original names (later migrations refer to them by
name), foreign keys, triggers, and the template's django_migrations rows. Runs with
search_path = pg_catalog so that catalog functions print schema-qualified names.
"""

from django.db import migrations

CLONE_FUNCTION = r"""
CREATE OR REPLACE FUNCTION public.kcm_clone_schema(source text, target text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    src text := quote_ident(source) || '.';
    dst text := quote_ident(target) || '.';
    item record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = source) THEN
        RAISE EXCEPTION 'template schema % does not exist', source;
    END IF;
    EXECUTE format('CREATE SCHEMA %I', target);

    FOR item IN
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = source AND c.relkind IN ('r', 'p') ORDER BY c.relname
    LOOP
        EXECUTE format(
            'CREATE TABLE %I.%I (LIKE %I.%I INCLUDING DEFAULTS INCLUDING IDENTITY'
            ' INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS)',
            target, item.relname, source, item.relname);
    END LOOP;

    -- Primary keys, unique, check and exclusion constraints (foreign keys below).
    FOR item IN
        SELECT cl.relname, con.conname, pg_get_constraintdef(con.oid) AS def
        FROM pg_constraint con
        JOIN pg_class cl ON cl.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = cl.relnamespace
        WHERE n.nspname = source AND con.contype IN ('p', 'u', 'c', 'x')
        ORDER BY con.contype = 'p' DESC, con.conname
    LOOP
        EXECUTE format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s',
            target, item.relname, item.conname, replace(item.def, src, dst));
    END LOOP;

    -- Indexes that do not back a constraint, under their own names.
    FOR item IN
        SELECT pg_get_indexdef(i.indexrelid) AS def
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_namespace n ON n.oid = ic.relnamespace
        WHERE n.nspname = source
          AND NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = i.indexrelid)
    LOOP
        EXECUTE replace(item.def, ' ON ' || src, ' ON ' || dst);
    END LOOP;

    FOR item IN
        SELECT cl.relname, con.conname, pg_get_constraintdef(con.oid) AS def
        FROM pg_constraint con
        JOIN pg_class cl ON cl.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = cl.relnamespace
        WHERE n.nspname = source AND con.contype = 'f'
        ORDER BY con.conname
    LOOP
        EXECUTE format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s',
            target, item.relname, item.conname, replace(item.def, src, dst));
    END LOOP;

    FOR item IN
        SELECT pg_get_triggerdef(t.oid) AS def
        FROM pg_trigger t
        JOIN pg_class cl ON cl.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = cl.relnamespace
        WHERE n.nspname = source AND NOT t.tgisinternal
    LOOP
        EXECUTE replace(item.def, ' ON ' || src, ' ON ' || dst);
    END LOOP;

    EXECUTE format(
        'INSERT INTO %I.django_migrations (app, name, applied)'
        ' SELECT app, name, applied FROM %I.django_migrations ORDER BY id',
        target, source);
END;
$$;
"""


class Migration(migrations.Migration):
    dependencies = [("tenants", "0001_initial")]

    operations = [
        migrations.RunSQL(
            CLONE_FUNCTION, "DROP FUNCTION IF EXISTS public.kcm_clone_schema(text, text)"
        ),
    ]
