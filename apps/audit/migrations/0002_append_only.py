"""Append-only audit tables and the only ways to append.

- kcm_audit_append(...) chains one event at once (lifecycle events, in the caller's
  transaction): it takes a per-schema advisory lock held until that transaction ends, first
  chains whatever is pending, then the new event.
- Hot paths insert into audit_auditpending (a plain INSERT, durable at commit, no lock) and
  kcm_audit_seal() chains pending events in id order, shortly after.
Triggers refuse UPDATE, DELETE and TRUNCATE, except DELETE of pending rows by the seal and of
old events during a retention prune (which first archives, see apps.audit.retention).
"""

from django.db import migrations

FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION public.kcm_audit__chain(
    schema text, body text, occurred timestamptz, actor text, role text, ip inet, ua text,
    rid text, act text, tgt text, tver integer, outc text, ecode text, det jsonb
) RETURNS bigint
LANGUAGE plpgsql AS $$
-- Append one event after the head of `schema`'s chain. The caller holds the chain's lock.
DECLARE
    last_seq bigint;
    last_hash text;
BEGIN
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
    EXECUTE format(
        'INSERT INTO %I.audit_auditevent (seq, occurred_at, actor, role, source_ip, user_agent,'
        ' request_id, action, target, target_version, outcome, error_code, details, prev_hash, hash)'
        ' VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)', schema)
        USING last_seq + 1, occurred, actor, role, ip, ua, rid, act, tgt, tver, outc, ecode, det,
              last_hash,
              encode(sha256(convert_to(
                  last_hash || E'\n' || (last_seq + 1)::text || E'\n' || body, 'UTF8')), 'hex');
    RETURN last_seq + 1;
END;
$$;

CREATE OR REPLACE FUNCTION public.kcm_audit__seal(schema text) RETURNS integer
LANGUAGE plpgsql AS $$
-- Chain every pending event of `schema`, oldest first. The caller holds the chain's lock.
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
        -- Exactly the rows chained above: others may have committed since the SELECT.
        PERFORM set_config('kcm.audit_seal', 'on', true);
        EXECUTE format('DELETE FROM %I.audit_auditpending WHERE id = ANY($1)', schema) USING sealed;
        PERFORM set_config('kcm.audit_seal', 'off', true);
    END IF;
    RETURN cardinality(sealed);
END;
$$;

CREATE OR REPLACE FUNCTION public.kcm_audit_seal() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    schema text := current_schema();
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(schema || '.kcm_audit'));
    RETURN public.kcm_audit__seal(schema);
END;
$$;

CREATE OR REPLACE FUNCTION public.kcm_audit_append(
    body text, occurred timestamptz, actor text, role text, ip inet, ua text, rid text,
    act text, tgt text, tver integer, outc text, ecode text, det jsonb
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    schema text := current_schema();
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(schema || '.kcm_audit'));
    PERFORM public.kcm_audit__seal(schema);
    RETURN public.kcm_audit__chain(schema, body, occurred, actor, role, ip, ua, rid, act, tgt,
                                   tver, outc, ecode, det);
END;
$$;

CREATE OR REPLACE FUNCTION public.kcm_audit_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_auditpending'
       AND current_setting('kcm.audit_seal', true) = 'on' THEN
        RETURN OLD;
    END IF;
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_auditevent'
       AND current_setting('kcm.audit_prune', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit records are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
"""

TABLES = ("audit_auditevent", "audit_auditpending", "audit_auditcheckpoint")

TRIGGERS = "\n".join(
    f"CREATE TRIGGER kcm_immutable BEFORE UPDATE OR DELETE ON {table}"
    " FOR EACH ROW EXECUTE FUNCTION public.kcm_audit_immutable();\n"
    f"CREATE TRIGGER kcm_no_truncate BEFORE TRUNCATE ON {table}"
    " FOR EACH STATEMENT EXECUTE FUNCTION public.kcm_audit_immutable();"
    for table in TABLES
)

DROP_TRIGGERS = "\n".join(
    f"DROP TRIGGER IF EXISTS kcm_immutable ON {table};"
    f" DROP TRIGGER IF EXISTS kcm_no_truncate ON {table};"
    for table in TABLES
)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [
        migrations.RunSQL(FUNCTIONS, migrations.RunSQL.noop),
        migrations.RunSQL(TRIGGERS, DROP_TRIGGERS),
    ]
