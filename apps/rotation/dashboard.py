"""The tenant dashboard: one read of what a tenant's operators watch, for the console's charts
and the API (`GET /api/v1/dashboard/`).

It lives in the rotation layer because it reads rotation (due keys, running jobs) besides the
key chain and the audit log. Operation counts come from the audit log's events of the
data-key operations (one GROUP BY date_trunc per window, on the `occurred_at` index), so they
are what was audited, not what a process happened to count.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from apps.audit.models import AuditEvent, Outcome
from apps.audit.sealer import seal_here
from apps.keychain.datakeys import AUDIT_ACTIONS, BATCH_SUFFIX
from apps.keychain.models import (
    CustomerKey,
    CustomerKeyVersion,
    ExternalKeyManager,
    KeyState,
    ServiceKey,
    ServiceKeyVersion,
    TenantKey,
    VersionState,
)
from apps.keystores.registry import breaker_open
from apps.rotation import selectors
from apps.rotation.models import ACTIVE_STATES
from apps.rotation.policies import usage_safety_limit
from apps.tenants.access import current_tenant

TARGET_PREFIX = "service_key:"
RECENT_EVENTS = 10
SERIES_LIMIT = 10
USAGE_ROWS = 50
DUE_SOON_DAYS = 7
# (name, date_trunc unit, bucket width, buckets): the last 24 hours by hour, the last hour by
# minute; the newest bucket is the current, partial one.
WINDOWS = (("day", "hour", timedelta(hours=1), 24), ("hour", "minute", timedelta(minutes=1), 60))

# Single operations count 1; a batch counts its items (0 when it was refused before any item).
_OPERATIONS = """
SELECT date_trunc(%(unit)s, occurred_at AT TIME ZONE 'UTC') AS bucket, target, outcome,
       count(*) AS requests,
       sum(CASE WHEN action LIKE %(batch)s
                THEN COALESCE((details ->> 'items')::bigint, 0) ELSE 1 END) AS items
FROM audit_auditevent
WHERE occurred_at >= %(since)s AND action = ANY(%(actions)s)
GROUP BY 1, 2, 3
"""


def crypto_actions() -> list[str]:
    """The audit actions of the data-key operations, single and batch."""
    singles = list(AUDIT_ACTIONS.values())
    return singles + [action + BATCH_SUFFIX for action in singles]


def _floor(moment: datetime, unit: str) -> datetime:
    moment = moment.astimezone(UTC)
    if unit == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(second=0, microsecond=0)


# A bucket that ended this long ago no longer changes: pending events are chained before the
# count (seal_here), so only requests still in flight can add an event stamped earlier.
SETTLE = timedelta(minutes=5)
SETTLED_SCHEMAS = 512  # per process; the least recently shown tenant's buckets go first
_LAST_BEFORE = (
    "SELECT hash FROM audit_auditevent WHERE occurred_at < %(at)s"
    " ORDER BY occurred_at DESC, seq DESC LIMIT 1"
)

Row = tuple[str, str, int, int]  # target, outcome, requests, items


@dataclass
class _Settled:
    boundary: datetime  # every bucket before it is settled and held in `rows`
    last_hash: str | None  # the chain hash of the newest event before `boundary` when counted
    rows: dict[datetime, list[Row]]


class _SettledBuckets:
    """The grouped rows of settled buckets, per (schema, unit), so that a dashboard refreshed
    every 30 s reads only the last few minutes of the audit log instead of the whole day.

    They are trusted while the newest event before their boundary is still the same one (its
    chain hash covers its content and all before it): a restored or rolled-back log changes it,
    and then the whole window is read again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: OrderedDict[tuple[str, str], _Settled] = OrderedDict()

    def get(self, key: tuple[str, str]) -> _Settled | None:
        with self._lock:
            found = self._data.get(key)
            if found is not None:
                self._data.move_to_end(key)
            return found

    def reset(self) -> None:
        with self._lock:
            self._data.clear()

    def put(self, key: tuple[str, str], value: _Settled) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > SETTLED_SCHEMAS:
                self._data.popitem(last=False)


settled_buckets = _SettledBuckets()


def _last_hash_before(cursor: Any, moment: datetime) -> str | None:
    cursor.execute(_LAST_BEFORE, {"at": moment})
    row = cursor.fetchone()
    return str(row[0]) if row else None


def _grouped_rows(*, unit: str, first: datetime, now: datetime) -> dict[datetime, list[Row]]:
    """The rows of every bucket from `first` on, settled ones from the cache when it holds."""
    key = (current_tenant().schema_name, unit)
    boundary = _floor(now - SETTLE, unit)
    with connection.cursor() as cursor:
        cached = settled_buckets.get(key)
        if cached is not None and _last_hash_before(cursor, cached.boundary) != cached.last_hash:
            cached = None
        since = max(first, cached.boundary) if cached is not None else first
        cursor.execute(
            _OPERATIONS,
            {
                "unit": unit,
                "since": since,
                "actions": crypto_actions(),
                "batch": "%" + BATCH_SUFFIX,
            },
        )
        by_bucket: dict[datetime, list[Row]] = defaultdict(list)
        if cached is not None:
            by_bucket.update({b: rows for b, rows in cached.rows.items() if b >= first})
        for bucket, target, outcome, requests, items in cursor.fetchall():
            by_bucket[bucket.replace(tzinfo=UTC)].append((target, outcome, requests, items))
        if cached is None or cached.boundary != boundary:
            last_hash = _last_hash_before(cursor, boundary)
        else:
            last_hash = cached.last_hash
    settled = {b: rows for b, rows in by_bucket.items() if first <= b < boundary}
    settled_buckets.put(key, _Settled(boundary=boundary, last_hash=last_hash, rows=settled))
    return by_bucket


def operations_window(*, unit: str, width: timedelta, count: int, now: datetime) -> dict[str, Any]:
    """Data-key operations per service key and refused requests (denied, error) per bucket."""
    first = _floor(now, unit) - width * (count - 1)
    buckets = [first + width * i for i in range(count)]
    index = {bucket: i for i, bucket in enumerate(buckets)}
    per_key: dict[str, list[int]] = defaultdict(lambda: [0] * count)
    refused = {Outcome.DENIED.value: [0] * count, Outcome.ERROR.value: [0] * count}
    for bucket, rows in _grouped_rows(unit=unit, first=first, now=now).items():
        position = index.get(bucket)
        if position is None:  # an event stamped in the future: not on this chart
            continue
        for target, outcome, requests, items in rows:
            if outcome == Outcome.SUCCESS:
                name = target.removeprefix(TARGET_PREFIX)
                per_key[name][position] += int(items)
            elif outcome in refused:
                refused[outcome][position] += int(requests)
    return {
        "unit": unit,
        "buckets": buckets,
        **_top_series(per_key, count),
        "denied": refused[Outcome.DENIED],
        "error": refused[Outcome.ERROR],
    }


def _top_series(per_key: dict[str, list[int]], count: int) -> dict[str, Any]:
    """The SERIES_LIMIT busiest service keys by name, and the others summed: a chart of a
    thousand lines says nothing, and the body stays small however many keys are used."""
    busiest = sorted(per_key, key=lambda name: (-sum(per_key[name]), name))[:SERIES_LIMIT]
    chosen = set(busiest)
    others = [name for name in per_key if name not in chosen]
    return {
        "series": [{"service_key": name, "counts": per_key[name]} for name in sorted(busiest)],
        "other": {
            "service_keys": len(others),
            "counts": [sum(per_key[name][i] for name in others) for i in range(count)],
        },
    }


def _key_names(ids: set[Any]) -> dict[Any, str]:
    return {
        **dict(CustomerKey.objects.filter(pk__in=ids).values_list("pk", "name")),
        **{pk: f"tenant key of {name}" for pk, name in
           TenantKey.objects.filter(pk__in=ids).values_list("pk", "customer_key__name")},
        **dict(ServiceKey.objects.filter(pk__in=ids).values_list("pk", "name")),
    }  # fmt: skip


def rotations_due(*, now: datetime) -> list[dict[str, Any]]:
    """Keys due for rotation now (by period or usage; a key being rotated is not due), then
    those that fall due by period within DUE_SOON_DAYS."""
    schema = [current_tenant().schema_name]
    due = selectors.due_scan(schemas=schema, now=now).due
    soon = selectors.due_scan(schemas=schema, now=now + timedelta(days=DUE_SOON_DAYS)).due
    due_ids = {key_id for _, key_id, _ in due}
    names = _key_names(due_ids | {key_id for _, key_id, _ in soon})
    rows = [(key_id, level, "due") for _, key_id, level in due]
    rows += [(key_id, level, "soon") for _, key_id, level in soon if key_id not in due_ids]
    return [
        {
            "key_id": str(key_id),
            "level": level,
            "name": names.get(key_id, str(key_id)),
            "when": when,
        }
        for key_id, level, when in rows
    ]


def gcm_usage() -> dict[str, Any]:
    """Reserved encryptions of each L3 version that can still encrypt or decrypt, most used
    first, against the GCM limit and the usage at which rotation is forced."""
    versions = (
        ServiceKeyVersion.objects.exclude(state=VersionState.DESTROYED)
        .select_related("key")
        .order_by("-usage_reserved", "key__name", "-version")[:USAGE_ROWS]
    )
    return {
        "limit": settings.KCM_GCM_USAGE_LIMIT,
        "safety_limit": usage_safety_limit(),
        "versions": [
            {
                "service_key": version.key.name,
                "version": version.version,
                "primary": version.version == version.key.primary_version,
                "state": version.state,
                "used": version.usage_reserved,
                "fraction": version.usage_reserved / settings.KCM_GCM_USAGE_LIMIT,
            }
            for version in versions
        ],
    }


def key_managers() -> list[dict[str, Any]]:
    """Each HYOK key manager: its customer keys by state (UNAVAILABLE and FORBIDDEN are what the
    manager last told us) and whether this process's circuit breaker for it is open."""
    states: dict[Any, dict[str, int]] = defaultdict(dict)
    rows = (
        CustomerKeyVersion.objects.filter(external_manager__isnull=False)
        .values("external_manager_id", "key__state")
        .annotate(keys=Count("key_id", distinct=True))
    )
    for row in rows:
        states[row["external_manager_id"]][row["key__state"]] = row["keys"]
    result = []
    for manager in ExternalKeyManager.objects.order_by("name"):
        by_state = states.get(manager.pk, {})
        troubled = by_state.get(KeyState.UNAVAILABLE, 0) + by_state.get(KeyState.FORBIDDEN, 0)
        is_open = breaker_open(manager.pk)
        result.append(
            {
                "id": str(manager.pk),
                "name": manager.name,
                "kind": manager.kind,
                "keys_by_state": by_state,
                "breaker": "unknown" if is_open is None else ("open" if is_open else "closed"),
                "healthy": troubled == 0 and not is_open,
            }
        )
    return result


def recent_events() -> list[dict[str, Any]]:
    """The newest audit events, without details (contexts) or anything else that could leak."""
    fields = ("seq", "occurred_at", "action", "target", "outcome", "error_code", "actor")
    return list(AuditEvent.objects.order_by("-seq").values(*fields)[:RECENT_EVENTS])


def dashboard(*, now: datetime | None = None) -> dict[str, Any]:
    """Everything the tenant dashboard shows, in the current tenant's schema."""
    now = now or timezone.now()
    seal_here()  # count what was committed a moment ago too
    windows = {
        name: operations_window(unit=unit, width=width, count=count, now=now)
        for name, unit, width, count in WINDOWS
    }
    jobs = [job for state in ACTIVE_STATES for job in selectors.job_list(state=state)]
    return {
        "generated_at": now,
        "operations": windows,
        "rotations_due": rotations_due(now=now),
        "gcm_usage": gcm_usage(),
        "key_managers": key_managers(),
        "running_jobs": jobs,
        "recent_events": recent_events(),
    }
