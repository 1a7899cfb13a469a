"""Audit group commit for the data plane: one transaction for the events of every request that
is waiting, instead of one commit (and one WAL flush) per request.

A request hands its event, with what its insert must check (dataplane_state), to this process's
writer thread and waits. The writer takes every event waiting, inserts each schema's in one
statement whose rows are inserted only if still allowed, commits, and only then wakes the
requests with their answer: an operation is acknowledged only once its event is committed;
a crash before the commit loses only events of requests not yet answered. Nothing waits on
purpose: events simply gather while the previous transaction commits.

On when KCM_AUDIT_GROUP_COMMIT is true (off by default: measured in docs/dataplane.md, it saves
PostgreSQL a quarter of its CPU per operation but costs throughput at moderate concurrency),
and only for a request outside a transaction (production: autocommit); inside one (tests) the
event must join it, and dataplane_state.commit() writes it inline.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from apps.audit.models import AuditPending
from apps.core.connections import dedicated_connection
from apps.core.forks import after_fork_in_child
from apps.tenants.models import TenantStatus

logger = logging.getLogger(__name__)

WAIT_SECONDS = 10.0


class CommitFailed(Exception):
    """The group's transaction failed (or took too long): nothing of it was acknowledged."""


@dataclass
class _Event:
    schema: str
    body: str
    params: tuple[str, int, int, int]  # domain, token id, tenant id, key epoch
    allowed: bool = False
    error: Exception | None = None
    done: threading.Event = field(default_factory=threading.Event)


_SQL = sql.SQL(
    "WITH v AS (SELECT * FROM unnest(%s::int[], %s::text[], %s::text[], %s::bigint[],"
    " %s::bigint[], %s::bigint[]) AS v(n, body, domain, token, tenant, epoch)),"
    " ok AS (SELECT v.n, v.body FROM v WHERE EXISTS (SELECT 1 FROM public.tenants_tenant t"
    " JOIN public.tenants_domain d ON d.tenant_id = t.id AND d.domain = v.domain"
    " JOIN public.tenants_apitoken k ON k.id = v.token"
    " WHERE t.id = v.tenant AND t.status = %s AND t.key_epoch = v.epoch"
    " AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now()))),"
    " ins AS (INSERT INTO {table} (body) SELECT body FROM ok ORDER BY n)"
    " SELECT n FROM ok"
)


def _sql(schema: str) -> sql.Composed:
    return _SQL.format(table=sql.Identifier(schema, AuditPending._meta.db_table))


class _Writer:
    def __init__(self) -> None:
        self.waiting: list[_Event] = []
        self.ready = threading.Condition()
        self.thread: threading.Thread | None = None
        self.conn: Any = None

    def submit(self, schema: str, body: str, params: tuple[str, int, int, int]) -> bool:
        event = _Event(schema, body, params)
        with self.ready:
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self.run, name="kcm-audit-group-commit", daemon=True
                )
                self.thread.start()
            self.waiting.append(event)
            self.ready.notify()
        if not event.done.wait(WAIT_SECONDS):
            raise CommitFailed("the audit group commit did not answer in time")
        if event.error is not None:
            raise CommitFailed(type(event.error).__name__) from event.error
        return event.allowed

    def run(self) -> None:
        while True:
            with self.ready:
                while not self.waiting:
                    self.ready.wait()
                group, self.waiting = self.waiting, []
            try:
                self._commit(group)
            except Exception as exc:  # every request of the group answers 503
                logger.warning("audit group commit failed: %s", type(exc).__name__)
                for event in group:
                    event.error = exc
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
            finally:
                for event in group:
                    event.done.set()

    def _commit(self, group: list[_Event]) -> None:
        if self.conn is None or self.conn.closed:
            self.conn = dedicated_connection(application_name="kcm-audit-group-commit")
        by_schema: dict[str, list[tuple[int, _Event]]] = defaultdict(list)
        for number, event in enumerate(group):
            by_schema[event.schema].append((number, event))
        allowed: set[int] = set()
        # One schema (the usual case): the statement is its own transaction, one round trip.
        with self.conn.transaction() if len(by_schema) > 1 else nullcontext():
            for schema, events in by_schema.items():
                columns: list[list[Any]] = [[], [], [], [], [], []]
                for number, event in events:
                    for column, value in zip(
                        columns, (number, event.body, *event.params), strict=True
                    ):
                        column.append(value)
                rows = self.conn.execute(_sql(schema), [*columns, TenantStatus.ACTIVE])
                allowed.update(int(row[0]) for row in rows)
        for number, event in enumerate(group):
            event.allowed = number in allowed


_writer = _Writer()


@after_fork_in_child
def _forget_after_fork() -> None:
    # The parent's thread and connection are not the child's: it starts its own on first use.
    global _writer
    _writer = _Writer()


def group_commit(schema: str, body: str, params: tuple[str, int, int, int]) -> bool:
    """Commit `body` in `schema`'s audit log with the waiting events of other requests, if
    `params` (domain, token id, tenant id, key epoch) still allow it; whether they did. Raises
    CommitFailed if the transaction failed: then nothing is acknowledged."""
    return _writer.submit(schema, body, params)
