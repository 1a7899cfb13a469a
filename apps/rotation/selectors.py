"""Rotation reads, shared by console and API; and the cross-tenant queries of the sweeps.

The sweeps look at every active tenant's schema at once with one UNION ALL statement per
chunk of schemas, rather than switching schema and querying tenant by tenant: with a thousand
tenants and nothing due, that is a handful of statements instead of thousands.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.db import connection
from django.utils import timezone

from apps.keychain.chain import find_key
from apps.keychain.models import CustomerKey, ServiceKeyVersion, TenantKey
from apps.rotation.errors import JobNotFound
from apps.rotation.models import ACTIVE_STATES, PolicyLevel, RewrapJob, RotationPolicy
from apps.rotation.policies import usage_safety_limit

SCHEMAS_PER_STATEMENT = 50  # measured: larger unions plan more slowly per schema
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


# --- jobs -----------------------------------------------------------------------------------


def job_get(*, job_id: UUID | str) -> RewrapJob:
    job = RewrapJob.objects.filter(pk=job_id).first()
    if job is None:
        raise JobNotFound()
    return job


def _key_name(job: RewrapJob) -> str:
    if job.level == PolicyLevel.L1:
        l1 = CustomerKey.objects.filter(pk=job.key_id).values_list("name", flat=True).first()
    else:
        l1 = (
            TenantKey.objects.filter(pk=job.key_id)
            .values_list("customer_key__name", flat=True)
            .first()
        )
    label = "customer key" if job.level == PolicyLevel.L1 else "tenant key of"
    return f"{label} {l1}" if l1 else str(job.key_id)


def job_detail(job: RewrapJob, *, key_name: str | None = None) -> dict[str, Any]:
    """A job as the API and the console's progress bar show it."""
    handled = job.done + job.failed
    remaining = max(job.total - handled, 0)
    eta = remaining / job.rate if job.is_active and job.rate > 0 else None
    return {
        "id": str(job.pk),
        "level": job.level,
        "key_id": str(job.key_id),
        "key_name": key_name if key_name is not None else _key_name(job),
        "from_version": job.from_version,
        "target_version": job.target_version,
        "dry_run": job.dry_run,
        "state": job.state,
        "reason": job.reason,
        "requested_by": job.requested_by,
        "platform_run": str(job.platform_run) if job.platform_run else None,
        "total": job.total,
        "done": job.done,
        "failed": job.failed,
        "progress": min(handled / job.total, 1.0) if job.total else (0.0 if job.is_active else 1.0),
        "rate": round(job.rate, 1),
        "eta_seconds": round(eta, 1) if eta is not None else None,
        "error": job.error or None,
        "report": job.report or None,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "heartbeat_at": job.heartbeat_at,
    }


def job_list(
    *, key_id: UUID | str | None = None, state: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    jobs = RewrapJob.objects.order_by("-created_at")
    if key_id is not None:
        jobs = jobs.filter(key_id=key_id)
    if state is not None:
        jobs = jobs.filter(state=state)
    page = list(jobs[:limit])
    ids = {job.key_id for job in page}
    names = {
        **{pk: f"customer key {name}" for pk, name in
           CustomerKey.objects.filter(pk__in=ids).values_list("pk", "name")},
        **{pk: f"tenant key of {name}" for pk, name in
           TenantKey.objects.filter(pk__in=ids).values_list("pk", "customer_key__name")},
    }  # fmt: skip
    return [job_detail(job, key_name=names.get(job.key_id, str(job.key_id))) for job in page]


def active_job_for(*, key_id: UUID | str) -> RewrapJob | None:
    return RewrapJob.objects.filter(key_id=key_id, state__in=ACTIVE_STATES, dry_run=False).first()


# --- policies -------------------------------------------------------------------------------


def _policy_fields(policy: RotationPolicy | None) -> dict[str, Any] | None:
    if policy is None:
        return None
    return {"period_days": policy.period_days, "max_usage": policy.max_usage}


def rotation_defaults() -> dict[str, dict[str, Any] | None]:
    policies = {p.level: p for p in RotationPolicy.objects.filter(key_id=None)}
    return {level: _policy_fields(policies.get(level)) for level in PolicyLevel.values}


def key_policy(*, key_id: UUID | str) -> dict[str, Any]:
    """A key's own policy, the tenant default for its level, the effective result and when the
    key is next due."""
    key = find_key(key_id)
    level = str(key.level)
    own = RotationPolicy.objects.filter(key_id=key.pk).first()
    default = RotationPolicy.objects.filter(key_id=None, level=level).first()
    period = (own and own.period_days) or (default and default.period_days) or None
    max_usage = (own and own.max_usage) or (default and default.max_usage) or None
    primary = key.versions.get(version=key.primary_version)
    result: dict[str, Any] = {
        "key_id": str(key.pk),
        "level": level,
        "own": _policy_fields(own),
        "default": _policy_fields(default),
        "effective": {"period_days": period, "max_usage": max_usage},
        "primary_version": key.primary_version,
        "primary_created_at": primary.created_at,
        "next_due_at": primary.created_at + timedelta(days=period) if period else None,
    }
    if isinstance(primary, ServiceKeyVersion):
        result["effective"]["usage_safety_limit"] = usage_safety_limit()
        result["usage_reserved"] = primary.usage_reserved
    return result


# --- across tenants -------------------------------------------------------------------------

_DUE = """
WITH k AS (
  SELECT 'L1' AS level, k.id, false AS worn,
         v.created_at + make_interval(days => COALESCE(p.period_days, d.period_days)) AS due_at
  FROM {s}.keychain_customerkey k
  JOIN {s}.keychain_customerkeyversion v ON v.key_id = k.id AND v.version = k.primary_version
  LEFT JOIN {s}.rotation_rotationpolicy p ON p.key_id = k.id
  LEFT JOIN {s}.rotation_rotationpolicy d ON d.key_id IS NULL AND d.level = 'L1'
  WHERE k.state = 'ENABLED' AND k.origin = 'HSM'
    AND COALESCE(p.period_days, d.period_days) IS NOT NULL
  UNION ALL
  SELECT 'L2', k.id, false,
         v.created_at + make_interval(days => COALESCE(p.period_days, d.period_days))
  FROM {s}.keychain_tenantkey k
  JOIN {s}.keychain_customerkey c ON c.id = k.customer_key_id
  JOIN {s}.keychain_tenantkeyversion v ON v.key_id = k.id AND v.version = k.primary_version
  LEFT JOIN {s}.rotation_rotationpolicy p ON p.key_id = k.id
  LEFT JOIN {s}.rotation_rotationpolicy d ON d.key_id IS NULL AND d.level = 'L2'
  WHERE k.state = 'ENABLED' AND c.state = 'ENABLED'
    AND COALESCE(p.period_days, d.period_days) IS NOT NULL
  UNION ALL
  SELECT 'L3', k.id,
         v.usage_reserved >= LEAST(COALESCE(p.max_usage, d.max_usage, %(safety)s), %(safety)s),
         v.created_at + make_interval(days => COALESCE(p.period_days, d.period_days))
  FROM {s}.keychain_servicekey k
  JOIN {s}.keychain_tenantkey t ON t.id = k.tenant_key_id
  JOIN {s}.keychain_customerkey c ON c.id = t.customer_key_id
  JOIN {s}.keychain_servicekeyversion v ON v.key_id = k.id AND v.version = k.primary_version
  LEFT JOIN {s}.rotation_rotationpolicy p ON p.key_id = k.id
  LEFT JOIN {s}.rotation_rotationpolicy d ON d.key_id IS NULL AND d.level = 'L3'
  WHERE k.state = 'ENABLED' AND t.state = 'ENABLED' AND c.state = 'ENABLED'
    AND (COALESCE(p.period_days, d.period_days) IS NOT NULL
         OR v.usage_reserved >= LEAST(COALESCE(p.max_usage, d.max_usage, %(safety)s), %(safety)s))
)
SELECT {name}, k.id, k.level, NULL::timestamptz FROM k
WHERE (k.due_at <= %(now)s OR k.worn) AND NOT EXISTS ({active})
UNION ALL
SELECT {name}, NULL, NULL, min(k.due_at) FROM k WHERE k.due_at > %(now)s
"""
_ACTIVE_FOR_KEY = (
    "SELECT 1 FROM {s}.rotation_rewrapjob j WHERE j.key_id = k.id"
    " AND j.state IN ('queued', 'running') AND NOT j.dry_run"
)
_ACTIVE_JOBS = (
    "SELECT {name}, j.id, j.heartbeat_at FROM {s}.rotation_rewrapjob j"
    " WHERE j.state IN ('queued', 'running')"
)
_RUN_TOTALS = (
    "SELECT j.state, count(*), sum(j.total), sum(j.done), sum(j.failed), sum(j.rate)"
    " FROM {s}.rotation_rewrapjob j WHERE j.platform_run = %(run)s GROUP BY j.state"
)


def _across(schemas: Sequence[str], template: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Run `template` in every schema ({s}: the quoted schema, {name}: it as a literal) as one
    UNION ALL per chunk of schemas; returns all rows."""
    rows: list[tuple[Any, ...]] = []
    body = template.replace("{active}", _ACTIVE_FOR_KEY)
    for start in range(0, len(schemas), SCHEMAS_PER_STATEMENT):
        parts = []
        for schema in schemas[start : start + SCHEMAS_PER_STATEMENT]:
            if not _SCHEMA.match(schema):  # names come from our tenant table; still check
                raise ValueError(f"unexpected schema name {schema!r}")
            named = body.replace("{s}", connection.ops.quote_name(schema))
            parts.append("(" + named.replace("{name}", f"'{schema}'") + ")")
        with connection.cursor() as cursor:
            cursor.execute(" UNION ALL ".join(parts), params)
            rows += cursor.fetchall()
    return rows


@dataclass
class DueScan:
    due: list[tuple[str, UUID, str]]  # (schema, key id, level), oldest tenant first
    next_due: dict[str, datetime]  # schema -> when its next key falls due by period


def due_scan(*, schemas: Sequence[str], now: datetime | None = None) -> DueScan:
    """Every key due for rotation in `schemas` (by period or usage; keys with a rotation
    running are not due), and per schema when the next key falls due by period."""
    params = {"now": now or timezone.now(), "safety": usage_safety_limit()}
    scan = DueScan(due=[], next_due={})
    for schema, key_id, level, next_due in _across(schemas, _DUE, params):
        if key_id is not None:
            scan.due.append((schema, key_id, level))
        elif next_due is not None:
            scan.next_due[schema] = next_due
    return scan


def active_jobs(*, schemas: Sequence[str]) -> list[tuple[str, UUID, datetime]]:
    """(schema, job id, last sign of life) of every queued or running job."""
    return [(row[0], row[1], row[2]) for row in _across(schemas, _ACTIVE_JOBS, {})]


def platform_run_totals(*, schemas: Sequence[str], run_id: UUID) -> dict[str, Any]:
    """The jobs of a platform run across tenants, summed per state."""
    by_state: dict[str, int] = {}
    total = done = failed = 0
    rate = 0.0
    active = 0
    for state, count, job_total, job_done, job_failed, job_rate in _across(
        schemas, _RUN_TOTALS, {"run": run_id}
    ):
        by_state[state] = by_state.get(state, 0) + int(count)
        total += int(job_total or 0)
        done += int(job_done or 0)
        failed += int(job_failed or 0)
        if state in ACTIVE_STATES:
            rate += float(job_rate or 0.0)
            active += int(count)
    return {
        "jobs_by_state": by_state,
        "total": total,
        "done": done,
        "failed": failed,
        "rate": round(rate, 1),
        "active_jobs": active,
    }
