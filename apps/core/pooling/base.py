"""django-tenants' PostgreSQL backend made safe behind a transaction-pooling PgBouncer.

django-tenants selects a tenant with a session-level `SET search_path`, sent once per schema
switch (TENANT_LIMIT_SET_CALLS) as a statement of its own. Behind a pooler in transaction mode
each transaction may run on a different server connection, so the statement after that `SET`
can land on a server connection whose search_path another client left in another tenant's
schema. PgBouncer 1.18 does not carry search_path over (no track_extra_parameters).

Here no search_path is ever set for a session. Every transaction carries its own:
- outside a transaction (autocommit), each statement is sent as
  `SET LOCAL search_path = ...; <statement>` in one simple-protocol message: PostgreSQL runs
  the two as one implicit transaction, so PgBouncer gives them one server connection, and the
  setting ends with them;
- inside a transaction, its first statement carries the `SET LOCAL` (again in the same message),
  and so does the first statement after a change of schema or a rollback to a savepoint (which
  may undo it). All statements of a transaction share one server connection.
Whatever search_path a server connection had before, a statement never runs with it.

This needs client-side binding (Django's default for psycopg 3: parameters are merged into the
query, which then goes by the simple protocol that allows two statements in one message), no
prepared statements (Django's default) and no server-side cursors (the settings disable them).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.db import NotSupportedError
from django.db.backends.postgresql.base import Cursor as DjangoCursor
from django_tenants.postgresql_backend.base import DatabaseWrapper as TenantDatabaseWrapper
from django_tenants.utils import quote_schema_name
from psycopg import pq

if TYPE_CHECKING:  # Django defines its cursor for psycopg 3 only at run time
    import psycopg

    _ClientCursor = psycopg.ClientCursor[Any]
else:
    _ClientCursor = DjangoCursor


class PooledCursor(_ClientCursor):
    """Django's client-side-binding cursor that prefixes the statements which need it with the
    transaction's `SET LOCAL search_path` (decided by the owning DatabaseWrapper)."""

    wrapper: DatabaseWrapper | None = None

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        wrapper = self.wrapper
        path = wrapper.search_path_needed() if wrapper is not None else None
        if path is None or wrapper is None:
            return super().execute(query, params, **kwargs)
        if isinstance(query, bytes):
            query = query.decode()
        elif not isinstance(query, str):  # psycopg.sql.Composable
            query = query.as_string(self.connection)
        prefix = f"SET LOCAL search_path = {path}; "
        if params is not None:
            prefix = prefix.replace("%", "%%")  # the prefix holds no placeholder
        try:
            result = super().execute(prefix + query, params, **kwargs)
        except BaseException:
            wrapper.search_path_sent(None)  # perhaps never sent: send it again next time
            raise
        wrapper.search_path_sent(path)
        self.nextset()  # the statement's own result, not the SET's
        return result

    def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
        if self.wrapper is None:
            return super().executemany(query, params_seq, **kwargs)
        # Each execution carries the prefix as needed; in autocommit all run in one transaction.
        with self.connection.transaction() if self.connection.autocommit else nullcontext():
            for params in params_seq:
                self.execute(query, params)
        return None


class DatabaseWrapper(TenantDatabaseWrapper):
    """See the module docstring. Nothing changes for code that uses Django's connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The search_path the current transaction was given (None: not given yet).
        self._transaction_search_path: str | None = None
        super().__init__(*args, **kwargs)
        if self.settings_dict["OPTIONS"].get("server_side_binding") is True:
            raise ImproperlyConfigured(
                "KCM_DATABASE_POOLING=transaction needs client-side binding: remove "
                "server_side_binding from KCM_DATABASE_URL"
            )

    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        params["cursor_factory"] = PooledCursor
        # Prepared statements live in one server connection: never behind this pooler.
        params["prepare_threshold"] = None
        return params

    def create_cursor(self, name: str | None = None) -> Any:
        if name:
            raise NotSupportedError(
                "server-side cursors do not work behind a transaction pooler "
                "(DISABLE_SERVER_SIDE_CURSORS is set for KCM_DATABASE_POOLING=transaction)"
            )
        cursor = super().create_cursor(name)
        cursor.wrapper = self
        return cursor

    def _handle_search_path(self, cursor: Any = None) -> None:
        # No session-level SET: every statement or transaction carries its own (search_path_prefix).
        return

    def search_path_needed(self) -> str | None:
        """The search_path to `SET LOCAL` with the next statement, or None when the
        transaction it runs in already has it."""
        if not self.schema_name:
            raise ImproperlyConfigured(
                "Database schema not set. Did you forget to call set_schema() or set_tenant()?"
            )
        path = ", ".join(quote_schema_name(s) for s in self._get_cursor_search_paths())
        raw = self.connection
        if raw.autocommit:
            # Its own transaction: the setting must travel with it, every time.
            return path
        if raw.info.transaction_status == pq.TransactionStatus.IDLE:
            # psycopg is about to BEGIN a new transaction with this statement.
            self._transaction_search_path = None
        return None if self._transaction_search_path == path else path

    def search_path_sent(self, path: str | None) -> None:
        """Note what the current transaction's search_path is now (None: unknown)."""
        if not self.connection.autocommit:
            self._transaction_search_path = path

    def savepoint_rollback(self, sid: Any) -> None:
        try:
            super().savepoint_rollback(sid)
        finally:
            # A rollback to a savepoint undoes a SET LOCAL issued after it.
            self._transaction_search_path = None

    def rollback(self) -> None:
        self._transaction_search_path = None
        super().rollback()

    def close(self) -> None:
        self._transaction_search_path = None
        super().close()
