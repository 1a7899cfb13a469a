"""Tenant isolation through a transaction-pooling PgBouncer (KCM_DATABASE_POOLING=transaction).

Behind such a pooler, consecutive transactions of one client may run on different server
connections, and a server connection keeps whatever session-level search_path its last client
set. django-tenants' backend sets the tenant with a session-level `SET search_path`, once per
schema switch: the first test shows that through PgBouncer a query then runs in another
tenant's schema. KCM's pooled backend (apps/core/pooling) sends the search_path with every
transaction instead; the others show that no query of it ever runs elsewhere, even while other
clients leave every server connection set to the wrong tenant, under concurrent load of two
tenants. Real PostgreSQL, real PgBouncer (Debian's, transaction mode).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection
from django_tenants.postgresql_backend.base import DatabaseWrapper as TenantsWrapper
from psycopg import sql

from apps.core.pooling.base import DatabaseWrapper as PooledWrapper
from tests.pgbouncerkit import PgBouncer

SLUGS = ("acme", "globex")
PROBE = "kcm_isolation_probe"


def _direct_url() -> str:
    db = connection.settings_dict
    return (
        f"postgres://{db['USER'] or 'postgres'}@/{db['NAME']}?host={db['HOST']}&port={db['PORT']}"
    )


@pytest.fixture
def schemas(world: Any) -> Iterator[dict[str, str]]:
    """slug -> schema, each schema holding a one-row table naming its tenant (committed, so
    that connections through the pooler see it; dropped afterwards)."""
    found = {slug: world.tenants[slug].schema_name for slug in SLUGS}
    direct = psycopg.connect(_direct_url(), autocommit=True)
    try:
        for slug, schema in found.items():
            table = sql.Identifier(schema, PROBE)
            direct.execute(sql.SQL("CREATE TABLE {} (slug text)").format(table))
            direct.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(table), [slug])
        yield found
    finally:
        for schema in found.values():
            direct.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, PROBE)))
        direct.close()


def _wrapper(kind: type[TenantsWrapper], bouncer: PgBouncer, alias: str) -> TenantsWrapper:
    """A Django connection of backend `kind` to the test database through `bouncer`."""
    settings_dict = {
        **connection.settings_dict,
        "HOST": "127.0.0.1",
        "PORT": str(bouncer.port),
        "OPTIONS": {},
        "DISABLE_SERVER_SIDE_CURSORS": True,
    }
    return kind(settings_dict, alias)


def _owner(wrapper: TenantsWrapper) -> str:
    """The tenant whose table an unqualified query reads through `wrapper`."""
    with wrapper.cursor() as cursor:
        cursor.execute(f"SELECT slug FROM {PROBE}")
        return str(cursor.fetchone()[0])


def _pollute(bouncer: PgBouncer, schema: str) -> psycopg.Connection[Any]:
    """Leave a server connection's session search_path on `schema`, as a session-level SET
    (django-tenants' own) does."""
    other = psycopg.connect(
        bouncer.url(connection.settings_dict["NAME"]), autocommit=True, prepare_threshold=None
    )
    other.execute(sql.SQL("SET search_path = {}, public").format(sql.Identifier(schema)))
    return other


def test_through_pgbouncer_django_tenants_alone_reads_another_tenants_schema(
    schemas: dict[str, str],
) -> None:
    # One server connection: what one client SETs, the next transaction of any client inherits.
    with PgBouncer(_direct_url(), pool_size=1) as bouncer:
        plain = _wrapper(TenantsWrapper, bouncer, "plain")
        plain.set_schema(schemas["acme"])
        try:
            assert _owner(plain) == "acme"
            polluter = _pollute(bouncer, schemas["globex"])
            # The hazard: acme's next query runs in globex's schema.
            assert _owner(plain) == "globex"
            polluter.close()
        finally:
            plain.close()


def test_the_pooled_backend_reads_its_own_tenant_whatever_the_server_connection_holds(
    schemas: dict[str, str],
) -> None:
    with PgBouncer(_direct_url(), pool_size=1) as bouncer:
        pooled = _wrapper(PooledWrapper, bouncer, "pooled")
        pooled.set_schema(schemas["acme"])
        try:
            assert _owner(pooled) == "acme"
            polluter = _pollute(bouncer, schemas["globex"])
            assert _owner(pooled) == "acme"
            with pooled.cursor() as cursor:  # a composed query carries it too
                cursor.execute(sql.SQL("SELECT slug FROM {}").format(sql.Identifier(PROBE)))
                assert cursor.fetchone() == ("acme",)
            # In a transaction, after a savepoint rollback and across a schema switch, too.
            pooled.set_autocommit(False)
            assert _owner(pooled) == "acme"
            sid = pooled.savepoint()
            pooled.set_schema(schemas["globex"])
            assert _owner(pooled) == "globex"
            pooled.savepoint_rollback(sid)
            assert _owner(pooled) == "globex"  # the SET LOCAL was undone, and sent again
            pooled.set_schema(schemas["acme"])
            assert _owner(pooled) == "acme"
            pooled.commit()
            pooled.set_autocommit(True)
            polluter.close()
            # The pooled backend never changed a server connection's session setting.
            with pooled.cursor() as cursor:
                cursor.execute("SELECT 1")
            leftover = psycopg.connect(bouncer.url(connection.settings_dict["NAME"]))
            path = leftover.execute("SELECT current_setting('search_path')").fetchone()
            leftover.close()
            assert path is not None and schemas["acme"] not in path[0]
        finally:
            pooled.close()


def test_two_tenants_under_concurrent_load_never_read_each_others_schema(
    schemas: dict[str, str],
) -> None:
    seconds, workers = 3.0, 6
    checked: list[int] = []
    wrong: list[str] = []
    errors: list[str] = []
    polluted: list[int] = []
    stop = threading.Event()

    def pollute(bouncer: PgBouncer) -> None:
        # Keeps setting every server connection it gets to a random tenant's schema.
        conn = psycopg.connect(
            bouncer.url(connection.settings_dict["NAME"]), autocommit=True, prepare_threshold=None
        )
        rounds = 0
        try:
            while not stop.is_set():
                schema = random.choice(list(schemas.values()))
                query = sql.SQL("SET search_path = {}, public").format(sql.Identifier(schema))
                conn.execute(query)
                rounds += 1
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            polluted.append(rounds)
            conn.close()

    def work(bouncer: PgBouncer, number: int) -> None:
        wrapper = _wrapper(PooledWrapper, bouncer, f"pooled-{number}")
        rng = random.Random(number)
        count = 0
        try:
            while not stop.is_set():
                slug = rng.choice(SLUGS)
                wrapper.set_schema(schemas[slug])
                if rng.random() < 0.5:
                    seen = [_owner(wrapper)]  # autocommit: one statement, one transaction
                else:
                    wrapper.set_autocommit(False)
                    seen = [_owner(wrapper), _owner(wrapper)]
                    wrapper.commit()
                    wrapper.set_autocommit(True)
                count += len(seen)
                wrong.extend(f"{slug} read {owner}" for owner in seen if owner != slug)
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            checked.append(count)
            wrapper.close()

    with PgBouncer(_direct_url(), pool_size=2) as bouncer:
        threads = [threading.Thread(target=pollute, args=(bouncer,)) for _ in range(2)]
        threads += [threading.Thread(target=work, args=(bouncer, n)) for n in range(workers)]
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert wrong == []
    assert sum(checked) > 500, checked
    assert sum(polluted) > 500, polluted  # the server connections really were set wrong
