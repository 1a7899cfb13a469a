"""What the data plane (apps.keychain.dataplane) keeps between requests, and its one statement.

Two in-process caches spare a data-key request the queries Django's stack makes every time:
the tenant of a Host header and the principal of a bearer token (keyed by the token's
SHA-256, never the token). Neither is trusted on its own: the statement that commits the
request's audit event inserts it only if, at that moment, the domain still routes to the
tenant, the tenant is still active at the key epoch the request used, and the token is still
unrevoked and unexpired. If not, nothing was written or answered: the caches drop the
entries and the request is served again by Django's path, which reads everything afresh.
A revoked token, a suspended tenant or a kill-switch epoch therefore never outlives the
statement that would acknowledge the operation; the caches only save reads. Once this
process has heard of a newer key epoch for a tenant (the kill switch's notification), its
route moves to that epoch: the refusals that follow are answered here, not by Django's path.
"""

from __future__ import annotations

import copy
import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from django.conf import settings
from django.db import connection
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from django.http.request import split_domain_port, validate_host
from django.utils import timezone

from apps.audit.models import AuditPending
from apps.core.tenancy import Principal
from apps.keychain.cache import key_cache
from apps.keychain.dataplane_commit import group_commit
from apps.tenants.access import principal_for_token
from apps.tenants.models import ApiToken, Domain, Tenant, TenantStatus

MAX_ENTRIES = 10_000
# The token's last use is written at most this often (as principal_for_token does).
TOUCH_SECONDS = 60.0


@dataclass
class Route:
    """A Host header that routes to an active tenant."""

    domain: str
    tenant: Tenant


@dataclass
class Caller:
    """A token's principal, and when this process last wrote its `last_used_at`."""

    principal: Principal
    touched: float
    expires_at: float | None  # epoch seconds; None: never


class _Caches:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.callers: dict[str, Caller] = {}
        self.lock = threading.Lock()

    def clear(self) -> None:
        with self.lock:
            self.routes.clear()
            self.callers.clear()


caches = _Caches()


def _bounded_put(table: dict[str, Any], key: str, value: Any) -> None:
    with caches.lock:
        if len(table) >= MAX_ENTRIES:
            table.clear()  # rare (a flood of hosts or tokens): start again rather than track age
        table[key] = value


def route_for(host: str) -> Route | None:
    """The active tenant `host` routes to, or None (Django's path then answers as it does)."""
    route = caches.routes.get(host)
    if route is not None:
        tenant = route.tenant
        heard = key_cache().epoch_heard(tenant.schema_name)
        if tenant.key_epoch >= heard:
            return route
        # A revocation was heard since (the kill switch): from now on, requests go at the epoch
        # heard, so that the refusals are answered here instead of failing their commit and
        # being served again by Django's slower path. No read is needed: the commit checks the
        # epoch (and everything else) in the database, and a request already holding the old
        # route still commits at the old epoch, and so fails.
        moved = copy.copy(tenant)
        moved.key_epoch = heard
        route = Route(domain=route.domain, tenant=moved)
        _bounded_put(caches.routes, host, route)
        return route
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    domain = domain[4:] if domain.startswith("www.") else domain  # django-tenants' remove_www
    found = Domain.objects.select_related("tenant").filter(domain=domain).first()
    if found is None:
        return None
    tenant = found.tenant
    if tenant.schema_name == "public" or tenant.status != TenantStatus.ACTIVE:
        return None
    route = Route(domain=domain, tenant=tenant)
    _bounded_put(caches.routes, host, route)
    return route


def token_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def caller_for(raw: str) -> tuple[str, Principal] | None:
    """(cache key, principal) of a usable token, or None: unknown, expired, revoked."""
    key = token_key(raw)
    caller = caches.callers.get(key)
    now = time.time()
    if caller is not None:
        if caller.expires_at is not None and caller.expires_at <= now:
            forget(token=key)
            return None
        if time.monotonic() - caller.touched > TOUCH_SECONDS:
            caller.touched = time.monotonic()
            ApiToken.objects.filter(pk=caller.principal.id).update(last_used_at=_db_now())
        return key, caller.principal
    principal = principal_for_token(raw)  # the one rule for tokens; also writes last use
    if principal is None:
        return None
    expires = ApiToken.objects.filter(pk=principal.id).values_list("expires_at", flat=True)
    moment = expires.first()
    _bounded_put(
        caches.callers,
        key,
        Caller(principal, time.monotonic(), moment.timestamp() if moment else None),
    )
    return key, principal


def _db_now() -> Any:
    return timezone.now()


def forget(*, host: str | None = None, token: str | None = None) -> None:
    with caches.lock:
        if host is not None:
            caches.routes.pop(host, None)
        if token is not None:
            caches.callers.pop(token, None)


# --- the statement: still allowed? then the audit event, committed --------------------------

_STILL_ALLOWED = (
    "SELECT 1 FROM public.tenants_tenant t"
    " JOIN public.tenants_domain d ON d.tenant_id = t.id AND d.domain = %s"
    " JOIN public.tenants_apitoken k ON k.id = %s"
    " WHERE t.id = %s AND t.status = %s AND t.key_epoch = %s"
    " AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())"
)


def _insert_sql(schema: str) -> str:
    table = f'"{schema}".{AuditPending._meta.db_table}'
    return f"INSERT INTO {table} (body) SELECT %s WHERE EXISTS ({_STILL_ALLOWED}) RETURNING id"


def commit(route: Route, principal: Principal, epoch: int, body: str | None) -> bool:
    """Commit the request's audit event (`body`; None when auditing is off) if the request is
    still allowed; whether it was. Outside a transaction the event goes to the group commit
    (dataplane_commit); inside one (tests) it joins it, in one statement."""
    assert principal.token_id is not None
    if body is not None and settings.KCM_AUDIT_GROUP_COMMIT and not connection.in_atomic_block:
        checked = (route.domain, principal.token_id, route.tenant.pk, epoch)
        return group_commit(route.tenant.schema_name, body, checked)
    params = [route.domain, principal.token_id, route.tenant.pk, TenantStatus.ACTIVE, epoch]
    with _cursor() as cursor:
        if body is None:
            cursor.execute(_STILL_ALLOWED, params)
        else:
            cursor.execute(_insert_sql(route.tenant.schema_name), [body, *params])
        return cursor.fetchone() is not None


_NEVER = 2**62


class _PreparedCursor(psycopg.Cursor[Any]):
    """Server-side binding, and every statement prepared on its connection's first use."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        return super().execute(query, params, prepare=True, binary=kwargs.get("binary"))


def _cursor() -> Any:
    """A cursor for the statement above, with Django's error wrapping and query log.

    With session pooling (the default, a connection of its own per process) the statement is
    prepared once per connection and tenant: PostgreSQL then neither parses nor plans it again,
    which was most of its cost (docs/dataplane.md, "One statement per request"). A
    transaction-pooling PgBouncer does not keep a prepared statement from one transaction to
    the next: there the statement goes as Django sends every other (client-side binding)."""
    if settings.KCM_DATABASE_POOLING != "session":
        return connection.cursor()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    with connection.wrap_database_errors:
        pg = connection.connection
        if pg.prepare_threshold is None:
            # Django turns preparing off for the connection (None); this cursor asks for it
            # explicitly. A threshold nothing reaches keeps it off for everything else (Django's
            # own cursors bind on the client and never prepare anyway).
            pg.prepare_threshold = _NEVER
        raw = _PreparedCursor(pg)
    if connection.queries_logged:
        return _PreparedDebugCursor(raw, connection)
    return CursorWrapper(raw, connection)


class _PreparedDebugCursor(CursorDebugWrapper):
    """Django's query log (DEBUG, CaptureQueriesContext) with the statement's own text: Django
    reads a client-side cursor's merged query, which a prepared execution does not have."""

    def execute(self, sql: Any, params: Any = None) -> Any:
        with self.debug_sql(sql, params, use_last_executed_query=False):
            return CursorWrapper.execute(self, sql, params)
