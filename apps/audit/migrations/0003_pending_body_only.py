"""A pending event is its canonical body alone; the seal chains a batch in one statement.

A hot path (a cryptographic operation, a refused request) now commits one text value per
event: the canonical JSON the chain hashes anyway. `kcm_audit__seal` reads the pending bodies
in id order, hashes them in a loop, and writes the chained events in one INSERT, taking each
column from the body (which is exactly what the column holds on any other path: the body is
the canonical form of those values). Older pending rows carry the same body, so nothing needs
converting.
"""

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

# The previous definition (0002), for reversing: it reads the pending row's columns.
SEAL_0002 = r"""
CREATE OR REPLACE FUNCTION public.kcm_audit__seal(schema text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    item record;
    sealed bigint[] := '{}';
BEGIN
    FOR item IN EXECUTE format('SELECT * FROM %I.audit_auditpending ORDER BY id', schema) LOOP
        PERFORM public.kcm_audit__chain(schema, item.body, item.occurred_at, item.actor, item.role,
            item.source_ip, item.user_agent, item.request_id, item.action, item.target,
            item.target_version, item.outcome, item.error_code, item.details);
        sealed := sealed || item.id;
    END LOOP;
    IF cardinality(sealed) > 0 THEN
        PERFORM set_config('kcm.audit_seal', 'on', true);
        EXECUTE format('DELETE FROM %I.audit_auditpending WHERE id = ANY($1)', schema) USING sealed;
        PERFORM set_config('kcm.audit_seal', 'off', true);
    END IF;
    RETURN cardinality(sealed);
END;
$$;
"""

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
        migrations.RunSQL(SEAL, SEAL_0002),
        *(migrations.RemoveField(model_name="auditpending", name=name) for name in _COLUMNS),
    ]
