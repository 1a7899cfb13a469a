"""kcm_clone_schema(source, target), faster: replay DDL generated once from the template.

The first version (0002) read the catalog on every clone and built each table in several
steps: CREATE TABLE ... LIKE, then one ALTER TABLE per primary key, unique and check
constraint and per foreign key (each foreign key also ran its validation query). This one
writes the template's structure once as a script of plain DDL:

- one CREATE TABLE per table, carrying its columns (types, collations, NOT NULL, defaults,
  identities with their sequences' names and options, generated columns) and its primary key,
  unique, check, exclusion and foreign key constraints under their own names; tables come in
  foreign-key order so that a foreign key can be declared with its table (a new, empty table
  needs no validation); only references along a cycle, and constraints marked NOT VALID,
  become ALTER TABLE ... ADD CONSTRAINT after the tables;
- storage settings and comments, then the indexes that back no constraint, then triggers.

The script is kept in public.kcm_clone_script, one row per source schema, with a fingerprint
of everything it was generated from: the source's django_migrations rows (id, app, name and
time applied, so that migrating the template, or unapplying and reapplying a migration, makes
a new fingerprint), the generator's own source and the server's version. A clone recomputes
the fingerprint (one small query) and regenerates the script whenever it differs, so a stale
script is never run. The template must change only through migrations, as kcm_migrate does.

A clone then runs the script with the source's schema name replaced by the target's, as the
first version did with each statement, and copies the source's django_migrations rows. The
template may hold only what the script can copy (tables, their identity sequences, indexes,
constraints and triggers); anything else (views, functions, types, other sequences,
partitioned or inherited tables, row security) is refused rather than silently left out.
"""

from importlib import import_module

from django.db import migrations

# The cache, and the script generator. Nothing needs bumping by hand when the generator
# changes: each script's fingerprint includes the generator's source text.
BUILD_FUNCTION = r"""
CREATE TABLE IF NOT EXISTS public.kcm_clone_script (
    source text PRIMARY KEY,
    fingerprint text NOT NULL,
    script text NOT NULL,
    built_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION public.kcm_clone_script_build(source text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    ns oid;
    src text := quote_ident(source) || '.';
    script text := '';
    deferred text := '';
    extras text := '';
    done oid[] := '{}';
    remaining oid[];
    pick oid;
    rel record;
    item record;
    parts text[];
    coldef text;
    unsupported text;
BEGIN
    SELECT oid INTO ns FROM pg_namespace WHERE nspname = source;
    IF ns IS NULL THEN
        RAISE EXCEPTION 'template schema % does not exist', source;
    END IF;

    -- Refuse what the script would not copy, rather than produce a different schema.
    SELECT string_agg(what, ', ') INTO unsupported FROM (
        SELECT format('%s %I', CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN
                   'materialized view' WHEN 'f' THEN 'foreign table' WHEN 'c' THEN 'type'
                   WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index'
                   WHEN 'S' THEN 'sequence' ELSE 'relation' END, c.relname) AS what
        FROM pg_class c
        WHERE c.relnamespace = ns AND c.relkind NOT IN ('r', 'i', 'S')
           OR c.relnamespace = ns AND c.relkind = 'S' AND NOT EXISTS (
                SELECT 1 FROM pg_depend d
                WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'i')
           OR c.relnamespace = ns AND c.relkind = 'r'
              AND (c.relispartition OR c.relrowsecurity OR c.relam <> (
                    SELECT oid FROM pg_am WHERE amname = 'heap')
                   OR EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid))
        UNION ALL
        -- Types other than the tables' own row types and their array types.
        SELECT format('type %I', t.typname) FROM pg_type t
        WHERE t.typnamespace = ns AND t.typrelid = 0
          AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.oid = t.typelem AND e.typrelid <> 0)
        UNION ALL
        SELECT format('function %I', p.proname) FROM pg_proc p WHERE p.pronamespace = ns
        UNION ALL
        SELECT format('statistics %I', s.stxname) FROM pg_statistic_ext s
        WHERE s.stxnamespace = ns
        UNION ALL
        SELECT format('policy %I on %I', p.polname, c.relname)
        FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid WHERE c.relnamespace = ns
        UNION ALL
        SELECT format('disabled trigger %I on %I', t.tgname, c.relname)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = ns AND t.tgenabled <> 'O'
    ) refused;
    IF unsupported IS NOT NULL THEN
        RAISE EXCEPTION 'kcm_clone_schema cannot copy from %: %', source, unsupported;
    END IF;

    SELECT coalesce(array_agg(c.oid ORDER BY c.relname), '{}') INTO remaining
    FROM pg_class c WHERE c.relnamespace = ns AND c.relkind = 'r';

    WHILE cardinality(remaining) > 0 LOOP
        -- The first table by name whose referenced tables all exist by now; in a cycle, the
        -- first one left (its references to tables not made yet wait for the ALTERs below).
        pick := NULL;
        SELECT u.r INTO pick FROM unnest(remaining) WITH ORDINALITY AS u(r, i)
        WHERE NOT EXISTS (
            SELECT 1 FROM pg_constraint f
            WHERE f.conrelid = u.r AND f.contype = 'f' AND f.confrelid <> u.r
              AND f.confrelid = ANY (remaining))
        ORDER BY u.i LIMIT 1;
        IF pick IS NULL THEN
            pick := remaining[1];
        END IF;

        SELECT c.relname, c.relpersistence, c.reloptions INTO rel
        FROM pg_class c WHERE c.oid = pick;
        parts := '{}';
        FOR item IN
            SELECT a.attname, a.attnotnull, a.attidentity, a.attgenerated, a.attcompression,
                   a.attstorage, t.typstorage,
                   format_type(a.atttypid, a.atttypmod) AS typ,
                   CASE WHEN a.attcollation <> t.typcollation THEN
                       quote_ident(cn.nspname) || '.' || quote_ident(co.collname) END AS coll,
                   (SELECT nn.conname FROM pg_constraint nn WHERE nn.conrelid = a.attrelid
                      AND nn.contype = 'n' AND nn.conkey = ARRAY[a.attnum]) AS notnull_name,
                   pg_get_expr(d.adbin, d.adrelid) AS def,
                   col_description(a.attrelid, a.attnum) AS comment,
                   sc.relname AS seqname, s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
                   s.seqcache, s.seqcycle
            FROM pg_attribute a
            JOIN pg_type t ON t.oid = a.atttypid
            LEFT JOIN pg_collation co ON co.oid = a.attcollation
            LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            LEFT JOIN pg_depend dep ON a.attidentity <> ''
                 AND dep.refclassid = 'pg_class'::regclass AND dep.refobjid = a.attrelid
                 AND dep.refobjsubid = a.attnum AND dep.classid = 'pg_class'::regclass
                 AND dep.deptype = 'i'
            LEFT JOIN pg_sequence s ON s.seqrelid = dep.objid
            LEFT JOIN pg_class sc ON sc.oid = s.seqrelid
            WHERE a.attrelid = pick AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum
        LOOP
            coldef := quote_ident(item.attname) || ' ' || item.typ;
            IF item.coll IS NOT NULL THEN
                coldef := coldef || ' COLLATE ' || item.coll;
            END IF;
            IF item.attcompression = 'p' THEN
                coldef := coldef || ' COMPRESSION pglz';
            ELSIF item.attcompression = 'l' THEN
                coldef := coldef || ' COMPRESSION lz4';
            END IF;
            IF item.attnotnull THEN
                coldef := coldef || CASE WHEN item.notnull_name IS NULL THEN ''
                    ELSE ' CONSTRAINT ' || quote_ident(item.notnull_name) END || ' NOT NULL';
            END IF;
            IF item.attidentity <> '' THEN
                coldef := coldef || format(
                    ' GENERATED %s AS IDENTITY (SEQUENCE NAME %s%I START WITH %s'
                    ' INCREMENT BY %s MINVALUE %s MAXVALUE %s CACHE %s %s)',
                    CASE item.attidentity WHEN 'a' THEN 'ALWAYS' ELSE 'BY DEFAULT' END,
                    src, item.seqname, item.seqstart, item.seqincrement, item.seqmin,
                    item.seqmax, item.seqcache,
                    CASE WHEN item.seqcycle THEN 'CYCLE' ELSE 'NO CYCLE' END);
            ELSIF item.attgenerated = 's' THEN
                coldef := coldef || ' GENERATED ALWAYS AS (' || item.def || ') STORED';
            ELSIF item.def IS NOT NULL THEN
                coldef := coldef || ' DEFAULT ' || item.def;
            END IF;
            parts := parts || coldef;
            IF item.attstorage <> item.typstorage THEN
                extras := extras || format(E'ALTER TABLE %s%I ALTER COLUMN %I SET STORAGE %s;\n',
                    src, rel.relname, item.attname, CASE item.attstorage WHEN 'p' THEN 'PLAIN'
                    WHEN 'e' THEN 'EXTERNAL' WHEN 'm' THEN 'MAIN' ELSE 'EXTENDED' END);
            END IF;
            IF item.comment IS NOT NULL THEN
                extras := extras || format(E'COMMENT ON COLUMN %s%I.%I IS %L;\n',
                    src, rel.relname, item.attname, item.comment);
            END IF;
        END LOOP;
        IF obj_description(pick, 'pg_class') IS NOT NULL THEN
            extras := extras || format(E'COMMENT ON TABLE %s%I IS %L;\n',
                src, rel.relname, obj_description(pick, 'pg_class'));
        END IF;

        FOR item IN
            SELECT con.conname, con.contype, con.confrelid, con.convalidated,
                   pg_get_constraintdef(con.oid) AS def
            FROM pg_constraint con
            WHERE con.conrelid = pick AND con.contype IN ('p', 'u', 'c', 'x', 'f')
            ORDER BY con.contype = 'p' DESC, con.conname
        LOOP
            IF item.convalidated AND (item.contype <> 'f' OR item.confrelid = pick
                    OR item.confrelid = ANY (done) OR NOT item.confrelid = ANY (remaining)) THEN
                parts := parts || format('CONSTRAINT %I %s', item.conname, item.def);
            ELSE
                deferred := deferred || format(E'ALTER TABLE %s%I ADD CONSTRAINT %I %s;\n',
                    src, rel.relname, item.conname, item.def);
            END IF;
        END LOOP;

        script := script || format(E'CREATE %sTABLE %s%I (%s)%s;\n',
            CASE rel.relpersistence WHEN 'u' THEN 'UNLOGGED ' ELSE '' END,
            src, rel.relname, array_to_string(parts, ', '),
            CASE WHEN rel.reloptions IS NULL THEN ''
                 ELSE ' WITH (' || array_to_string(rel.reloptions, ', ') || ')' END);
        done := done || pick;
        remaining := array_remove(remaining, pick);
    END LOOP;

    script := script || deferred || extras;

    FOR item IN
        SELECT pg_get_indexdef(i.indexrelid) AS def
        FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
        WHERE ic.relnamespace = ns
          AND NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = i.indexrelid)
        ORDER BY ic.relname
    LOOP
        script := script || item.def || E';\n';
    END LOOP;

    FOR item IN
        SELECT pg_get_triggerdef(t.oid) AS def
        FROM pg_trigger t JOIN pg_class cl ON cl.oid = t.tgrelid
        WHERE cl.relnamespace = ns AND NOT t.tgisinternal
        ORDER BY cl.relname, t.tgname
    LOOP
        script := script || item.def || E';\n';
    END LOOP;
    RETURN script;
END;
$$;
"""

CLONE_FUNCTION = r"""
CREATE OR REPLACE FUNCTION public.kcm_clone_schema(source text, target text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    fp text;
    cached text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = source) THEN
        RAISE EXCEPTION 'template schema % does not exist', source;
    END IF;
    -- What the script is generated from; see the migration's docstring.
    EXECUTE format(
        'SELECT md5(concat_ws(''|'', current_setting(''server_version_num''),'
        ' (SELECT md5(prosrc) FROM pg_proc'
        '  WHERE oid = ''public.kcm_clone_script_build(text)''::regprocedure),'
        ' (SELECT string_agg(concat_ws('','', id, app, name, extract(epoch FROM applied)),'
        '  '';'' ORDER BY id) FROM %I.django_migrations)))', source)
    INTO fp;

    SELECT s.script INTO cached FROM public.kcm_clone_script s
    WHERE s.source = kcm_clone_schema.source AND s.fingerprint = fp;
    IF cached IS NULL THEN
        cached := public.kcm_clone_script_build(source);
        INSERT INTO public.kcm_clone_script (source, fingerprint, script)
        VALUES (kcm_clone_schema.source, fp, cached)
        ON CONFLICT ON CONSTRAINT kcm_clone_script_pkey DO UPDATE
            SET fingerprint = excluded.fingerprint, script = excluded.script, built_at = now();
    END IF;

    EXECUTE format('CREATE SCHEMA %I', target);
    EXECUTE replace(cached, quote_ident(source) || '.', quote_ident(target) || '.');
    EXECUTE format(
        'INSERT INTO %I.django_migrations (app, name, applied)'
        ' SELECT app, name, applied FROM %I.django_migrations ORDER BY id',
        target, source);
END;
$$;
"""

DROP = """
DROP TABLE IF EXISTS public.kcm_clone_script;
DROP FUNCTION IF EXISTS public.kcm_clone_script_build(text);
"""

PREVIOUS = import_module("apps.tenants.migrations.0002_clone_schema_function").CLONE_FUNCTION


class Migration(migrations.Migration):
    dependencies = [("tenants", "0003_platformkey")]

    operations = [
        migrations.RunSQL(BUILD_FUNCTION, DROP),
        migrations.RunSQL(CLONE_FUNCTION, PREVIOUS),
    ]
