"""An event is written as its canonical body alone, and only the seal writes the chain.

A hot path (a cryptographic operation, a refused request) now commits one text value per
event: the canonical JSON the chain hashes anyway. `kcm_audit__seal` reads the pending bodies
in id order, hashes them in a loop, and writes the chained events in one INSERT, taking each
column from the body (the canonical form of those very values). `kcm_audit_append(body)`, for
lifecycle events chained in the caller's transaction, adds the body to the pending events and
seals them, so one function reads the chain's head and writes its rows. Older pending rows
carry the same body, so nothing needs converting.
"""

from importlib import import_module

from django.db import migrations

SEAL = r"""
CREATE OR REPLACE FUNCTION public.kcm_audit__seal(schema text) RETURNS integer
LANGUAGE plpgsql AS $$
-- Chain every pending event of `schema`, oldest first. The caller holds the chain's lock.
DECLARE
    ids bigint[];
    bodies text[];
    prevs text[];
    hashes text[];
    last_seq bigint;
    last_hash text;
    n integer;
BEGIN
    EXECUTE format(
        'SELECT array_agg(id ORDER BY id), array_agg(body ORDER BY id) FROM %I.audit_auditpending',
        schema) INTO ids, bodies;
    n := coalesce(cardinality(ids), 0);
    IF n = 0 THEN
        RETURN 0;
    END IF;
    EXECUTE format('SELECT seq, hash FROM %I.audit_auditevent ORDER BY seq DESC LIMIT 1', schema)
        INTO last_seq, last_hash;
    IF last_seq IS NULL THEN
        -- An empty log after a prune continues from its anchor checkpoint.
        EXECUTE format(
            'SELECT seq, hash FROM %I.audit_auditcheckpoint WHERE is_anchor ORDER BY seq DESC LIMIT 1',
            schema) INTO last_seq, last_hash;
    END IF;
    IF last_seq IS NULL THEN
        last_seq := 0;
        last_hash := repeat('0', 64);
    END IF;
    FOR i IN 1..n LOOP
        prevs[i] := last_hash;
        last_hash := encode(sha256(convert_to(
            last_hash || E'\n' || (last_seq + i)::text || E'\n' || bodies[i], 'UTF8')), 'hex');
        hashes[i] := last_hash;
    END LOOP;
    -- jsonb_to_record parses each body once (a ->> per column would parse it per column).
    EXECUTE format(
        'INSERT INTO %I.audit_auditevent (seq, occurred_at, actor, role, source_ip, user_agent,'
        ' request_id, action, target, target_version, outcome, error_code, details, prev_hash,'
        ' hash)'
        ' SELECT $1 + u.o, e.occurred_at, e.actor, e.role, e.source_ip, e.user_agent,'
        ' e.request_id, e.action, e.target, e.target_version, e.outcome, e.error_code,'
        ' e.details, u.prev, u.hash'
        ' FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS u(body, prev, hash, o)'
        ' CROSS JOIN LATERAL jsonb_to_record(u.body::jsonb) AS e(occurred_at timestamptz,'
        ' actor text, role text, source_ip inet, user_agent text, request_id text, action text,'
        ' target text, target_version integer, outcome text, error_code text, details jsonb)'
        ' ORDER BY u.o',
        schema) USING last_seq, bodies, prevs, hashes;
    -- Exactly the rows chained above: others may have committed since they were read.
    PERFORM set_config('kcm.audit_seal', 'on', true);
    EXECUTE format('DELETE FROM %I.audit_auditpending WHERE id = ANY($1)', schema) USING ids;
    PERFORM set_config('kcm.audit_seal', 'off', true);
    RETURN n;
END;
$$;
"""

APPEND = r"""
DROP FUNCTION IF EXISTS public.kcm_audit_append(
    text, timestamptz, text, text, inet, text, text, text, text, integer, text, text, jsonb);
DROP FUNCTION IF EXISTS public.kcm_audit__chain(
    text, text, timestamptz, text, text, inet, text, text, text, text, integer, text, text, jsonb);

CREATE OR REPLACE FUNCTION public.kcm_audit_append(body text) RETURNS void
LANGUAGE plpgsql AS $$
-- Chain one event at once, after everything pending, in the caller's transaction.
DECLARE
    schema text := current_schema();
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(schema || '.kcm_audit'));
    EXECUTE format('INSERT INTO %I.audit_auditpending (body) VALUES ($1)', schema) USING body;
    PERFORM public.kcm_audit__seal(schema);
END;
$$;
"""

# Reversing restores 0002's functions (they read the pending columns restored empty).
PREVIOUS = (
    "DROP FUNCTION IF EXISTS public.kcm_audit_append(text);\n"
    + import_module("apps.audit.migrations.0002_append_only").FUNCTIONS
)

_COLUMNS = (
    "occurred_at",
    "actor",
    "role",
    "source_ip",
    "user_agent",
    "request_id",
    "action",
    "target",
    "target_version",
    "outcome",
    "error_code",
    "details",
)


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_append_only")]

    # Reversing restores the columns empty, so it only works on an empty pending table.
    operations = [
        migrations.RunSQL(SEAL + APPEND, PREVIOUS),
        *(migrations.RemoveField(model_name="auditpending", name=name) for name in _COLUMNS),
    ]
