"""Celery's side of KCM's logging (kms_project/logconfig.py): the worker and beat log through the
same configuration as the web, and a task logs the request id, tenant and principal of the
request that queued it, carried in the task message's headers.
"""

from __future__ import annotations

import logging
from contextvars import Token
from typing import Any

from celery.signals import (
    before_task_publish,
    celeryd_after_setup,
    setup_logging,
    task_postrun,
    task_prerun,
)
from django.db import connection

from apps.core import logcontext
from kms_project import logconfig

logger = logging.getLogger(__name__)
# Message headers that carry the queuing request's log context (not the tenant-schemas-celery
# `_schema_name`, which decides the schema the task runs in).
HEADERS = {name: f"kcm_{name}" for name in logcontext.FIELDS}
_bound: dict[str, Token[dict[str, str] | None]] = {}  # task id -> its context, while it runs


@setup_logging.connect
def _configure(**_: object) -> None:
    # Connected at all, this replaces Celery's own set-up (and its -l option: KCM_LOG_LEVEL).
    logconfig.configure(logconfig.from_env())


@celeryd_after_setup.connect
def _no_banner(sender: str, instance: Any, **_: object) -> None:
    # The start-up banner is printed, not logged: a block of text among the JSON lines.
    if logconfig.log_format() == "json":
        instance.quiet = True
        logger.info(
            "worker %s starting (%s pool, concurrency %s)",
            sender,
            getattr(instance.pool_cls, "__name__", instance.pool_cls),
            instance.concurrency,
        )


@before_task_publish.connect
def _carry_context(headers: dict[str, Any] | None = None, **_: object) -> None:
    if headers is None:
        return
    current = logcontext.current()
    for name, header in HEADERS.items():
        if current.get(name):
            headers.setdefault(header, current[name])


def _header(task: Any, name: str) -> str:
    # As tenant-schemas-celery reads `_schema_name`: some brokers nest the headers.
    nested = getattr(task.request, "headers", None) or {}
    value = nested.get(name) or task.request.get(name)
    return str(value) if value else ""


@task_prerun.connect
def _bind(task_id: str | None = None, task: Any = None, **_: object) -> None:
    if task_id is None or task is None:
        return
    fields = {name: _header(task, header) for name, header in HEADERS.items()}
    if not fields["tenant"]:
        # Where no request queued it: the tenant-schemas-celery switched to, if any.
        tenant = getattr(connection, "tenant", None)
        if tenant is not None and getattr(tenant, "schema_name", "public") != "public":
            fields["tenant"] = str(getattr(tenant, "slug", "") or tenant.schema_name)
    _bound[task_id] = logcontext.bind_fields(**fields, task=task.name, task_id=task_id)


@task_postrun.connect
def _unbind(task_id: str | None = None, **_: object) -> None:
    token = _bound.pop(task_id or "", None)
    if token is not None:
        logcontext.unbind_fields(token)
