"""Prometheus metrics, defined once in the lowest layer so that every layer can record them.

Recording is O(1) and in memory (a memory-mapped file per process in multiprocess mode, see
`kms_project.metrics`); nothing here queries the database. Labels hold only bounded values a
caller cannot choose freely: route names, HTTP statuses, operation names, error codes, tenant
slugs and key or key-manager ids. Never a key's name, an encryption context, a path or anything
else a request carries: a label ends up in every monitoring system downstream.

Exposition (the separate, loopback-only listener) lives in `kms_project.metrics`; what each
metric means is listed in docs/operations.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.db import connection
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

# This process's metrics. In multiprocess mode (gunicorn and Celery workers) the exposition
# reads every process's files instead; this registry serves tests and single processes.
REGISTRY = CollectorRegistry(auto_describe=True)

# A missing id (the key was not found, or the failure came before it was known).
UNKNOWN = "unknown"
OK = "ok"

_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

HTTP_REQUEST_SECONDS = Histogram(
    "kcm_http_request_duration_seconds",
    "Time to answer a request, by URL pattern name (not path), method and status.",
    ["route", "method", "status"],
    buckets=_FAST_BUCKETS,
    registry=REGISTRY,
)
DATAKEY_OPERATIONS = Counter(
    "kcm_datakey_operations",
    "Service-key operations (one per item of a batch), by outcome: ok or the error code.",
    ["tenant", "service_key_id", "operation", "outcome"],
    registry=REGISTRY,
)
KEY_CACHE_HITS = Counter(
    "kcm_key_cache_hits", "Key-cache lookups that found the key.", ["level"], registry=REGISTRY
)
KEY_CACHE_MISSES = Counter(
    "kcm_key_cache_misses",
    "Key-cache lookups that did not (absent or expired): the chain is unwrapped again.",
    ["level"],
    registry=REGISTRY,
)
KEY_CACHE_EVICTIONS = Counter(
    "kcm_key_cache_evictions",
    "Keys dropped from the cache: expired (TTL), capacity (LRU), revoked (a newer key epoch) "
    "or flushed (all at once, when the revocation listener reconnects).",
    ["level", "reason"],
    registry=REGISTRY,
)
KEYSTORE_CALL_SECONDS = Histogram(
    "kcm_keystore_call_duration_seconds",
    "Calls to the HSM (pkcs11, software) and customers' key managers (kmip, external-pkcs11).",
    ["keystore", "operation"],
    buckets=_FAST_BUCKETS,
    registry=REGISTRY,
)
KEYSTORE_CALL_ERRORS = Counter(
    "kcm_keystore_call_errors",
    "Keystore calls that failed, by the keystore error's code.",
    ["keystore", "operation", "code"],
    registry=REGISTRY,
)
BREAKER_OPEN = Gauge(
    "kcm_key_manager_breaker_open",
    "1 while a customer key manager's circuit breaker is open in some live process.",
    ["manager_id"],
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
BREAKER_OPENINGS = Counter(
    "kcm_key_manager_breaker_openings",
    "Times a key manager's circuit breaker opened (closed to open, or a failed trial).",
    ["manager_id"],
    registry=REGISTRY,
)
GCM_USAGE_RESERVED = Gauge(
    "kcm_gcm_usage_reserved",
    "Encryptions reserved under a service-key version (counted against the GCM limit); "
    "updated at each reservation block, so versions used since start only.",
    ["tenant", "service_key_id", "version"],
    multiprocess_mode="max",
    registry=REGISTRY,
)
GCM_USAGE_LIMIT = Gauge(
    "kcm_gcm_usage_limit",
    "Encryptions allowed per service-key version (KCM_GCM_USAGE_LIMIT).",
    multiprocess_mode="max",
    registry=REGISTRY,
)
REWRAP_CHILDREN = Counter(
    "kcm_rewrap_children",
    "Children (wrapped keys) handled by rewrap jobs: rewrapped, failed, or checked (dry run).",
    ["tenant", "level", "outcome"],
    registry=REGISTRY,
)
REWRAP_JOBS_RUNNING = Gauge(
    "kcm_rewrap_jobs_running",
    "Rewrap jobs a live process is running now.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
REWRAP_JOBS_FINISHED = Counter(
    "kcm_rewrap_jobs_finished",
    "Rewrap jobs that ended in this process, by final state.",
    ["tenant", "level", "state"],
    registry=REGISTRY,
)
AUDIT_SEAL_LAG_SECONDS = Histogram(
    "kcm_audit_seal_lag_seconds",
    "From the first event a process left pending to the seal that chained it.",
    buckets=(0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
AUDIT_SEAL_FAILURES = Counter(
    "kcm_audit_seal_failures",
    "Background seals that failed (retried next round; events stay pending, none is lost).",
    registry=REGISTRY,
)
AUDIT_STREAM_DELIVERED = Counter(
    "kcm_audit_stream_delivered",
    "Audit events a sink accepted (at least once: a batch resent after a crash counts twice).",
    ["tenant", "sink_id"],
    registry=REGISTRY,
)
AUDIT_STREAM_LAG = Gauge(
    "kcm_audit_stream_lag_events",
    "Sealed events a sink has not yet accepted, as of that sink's last delivery round.",
    ["tenant", "sink_id"],
    multiprocess_mode="livemax",
    registry=REGISTRY,
)


def tenant_label() -> str:
    """The current tenant's slug (its schema name where only that is known, as inside a
    `schema_context`)."""
    tenant = getattr(connection, "tenant", None)
    return str(getattr(tenant, "slug", None) or getattr(connection, "schema_name", UNKNOWN))


def observe_request(request: HttpRequest, status: int, seconds: float) -> None:
    match = getattr(request, "resolver_match", None)
    route = match.view_name if match is not None else getattr(request, "metrics_route", "none")
    observe_route(route, request.method or "", status, seconds)


def observe_route(route: str, method: str, status: int, seconds: float) -> None:
    """One answered request. `route` is a URL pattern's name (`api:service-key-encrypt`):
    anything that answers requests outside Django's URL resolution names them the same way."""
    HTTP_REQUEST_SECONDS.labels(
        route, method if method in _METHODS else "other", str(status)
    ).observe(seconds)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetricsMiddleware:
    """Time every request, whatever answers it (probes are named by `request.metrics_route`;
    anything no URL pattern matched is route "none")."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        observe_request(request, response.status_code, time.perf_counter() - started)
        return response


def datakey_operation(
    tenant: str, service_key_id: str, operation: str, outcome: str, count: int = 1
) -> None:
    DATAKEY_OPERATIONS.labels(tenant, service_key_id, operation, outcome).inc(count)
