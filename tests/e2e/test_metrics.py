"""Prometheus metrics from a live stack: 2 gunicorn workers and a prefork Celery worker.

Known traffic goes in (data keys made and opened on both web workers, refusals, a key that
does not exist, a task in the worker, an L2 rotation rewrapped by the worker); the node's
listener is scraped and every counter is checked against what was sent, summed over all the
processes. The listener is on its own loopback-only port: KCM's public port answers 404, and
no key name, encryption context or token appears anywhere in what it serves.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .stack import LiveStack, free_port
from .tenantkit import CONTEXT as PROBE_CONTEXT
from .tenantkit import (
    KEY_ADMIN,
    KEY_USER,
    Reply,
    Tenant,
    WorkerProbe,
    call,
    poll,
    provision_tenant,
    service_path,
    web_worker_pids,
)

pytestmark = pytest.mark.e2e

# Names and values a label must never carry: they must not show up in the exposition at all.
L1_NAME = "root-name-x9q"
SERVICE = "ledger-name-7f3a"
OTHER_SERVICE = "spare-name-c2d9"
MISSING_SERVICE = "nope-name-5e1b"
CONTEXT = {"purpose": "ctx-value-4d2f"}
WRONG_CONTEXT = {"purpose": "ctx-value-wrong-88e0"}
USAGE_BLOCK = 7  # small, so that each web worker reserves GCM uses several times

GENERATED = 40  # at least, spread over both web workers
DECRYPTED = 4
MISMATCHED = 5
MISSING = 3
BATCHED = 4  # and one more item, which fails


@dataclass
class Node:
    stack: LiveStack
    tenant: Tenant
    metrics_port: int

    def scrape(self, address: str = "127.0.0.1") -> str:
        connection = http.client.HTTPConnection(address, self.metrics_port, timeout=10)
        try:
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            assert response.status == 200, response.status
            return response.read().decode()
        finally:
            connection.close()


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    results = Path(tempfile.mkdtemp(prefix="kcm-results-"))
    port = free_port()
    env = {
        **os.environ,
        "KCM_RESULT_BACKEND": results.as_uri(),
        "KCM_METRICS_PORT": str(port),
        "KCM_USAGE_BLOCK": str(USAGE_BLOCK),
    }
    try:
        with LiveStack(web_workers=2, celery_pool="prefork", env=env) as stack:
            tenant = provision_tenant(stack, "met", (KEY_ADMIN, KEY_USER))
            yield Node(stack, tenant, port)
    finally:
        shutil.rmtree(results, ignore_errors=True)


def value(exposition: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def _post(node: Node, role: str, path: str, body: dict[str, Any]) -> Reply:
    return call(node.stack, node.tenant, role, "POST", path, body)


def _create_chain(node: Node) -> dict[str, str]:
    l1 = _post(node, KEY_ADMIN, "/api/v1/customer-keys/", {"name": L1_NAME})
    assert l1.status == 201, l1
    ids = {"l1": l1.body["id"], "l2": l1.body["tenant_key"]["id"]}
    for name in (SERVICE, OTHER_SERVICE):
        l3 = _post(node, KEY_ADMIN, "/api/v1/service-keys/", {"name": name})
        assert l3.status == 201, l3
        ids[name] = l3.body["id"]
    return ids


def _generate_on_both_workers(node: Node, at_least: int) -> list[Reply]:
    """At least `at_least` data keys, in rounds of 4 concurrent requests, until both web
    workers have made some."""
    pids = web_worker_pids(node.stack)
    assert len(pids) == 2, pids
    replies: list[Reply] = []
    path = f"{service_path(SERVICE)}/generate-data-key/"
    with ThreadPoolExecutor(4) as pool:
        while len(replies) < at_least or {r.pid for r in replies} != pids:
            assert len(replies) < 2000, Counter(r.pid for r in replies)
            replies += pool.map(
                lambda _: _post(node, KEY_USER, path, {"context": CONTEXT}), range(4)
            )
    assert {r.status for r in replies} == {200}, [r for r in replies if r.status != 200][:3]
    return replies


class Delta:
    """What a counter gained between two scrapes."""

    def __init__(self, before: str, after: str) -> None:
        self.before, self.after = before, after

    def __call__(self, name: str, **labels: str) -> float:
        return value(self.after, name, **labels) - value(self.before, name, **labels)


def test_counters_match_the_traffic_summed_over_every_process(node: Node) -> None:
    ids = _create_chain(node)
    key_id = ids[SERVICE]
    # Warm-up: both web workers load the key chain into their caches (a revocation listener
    # starts with each cache and, once connected, flushes what was loaded before it listened).
    warm = _generate_on_both_workers(node, 8)
    _wait_for_listeners(node, 2)
    time.sleep(0.5)
    before = node.scrape()

    generated = _generate_on_both_workers(node, GENERATED)
    ciphertext = generated[0].body["ciphertext"]
    opened = [
        _post(
            node, KEY_USER, f"{service_path(SERVICE)}/decrypt-data-key/",
            {"ciphertext": ciphertext, "context": context},
        )
        for context in [CONTEXT] * DECRYPTED + [WRONG_CONTEXT] * MISMATCHED
    ]  # fmt: skip
    assert [r.status for r in opened[:DECRYPTED]] == [200] * DECRYPTED
    assert {r.code for r in opened[DECRYPTED:]} == {"context_mismatch"}
    missing = [
        _post(node, KEY_USER, f"{service_path(MISSING_SERVICE)}/generate-data-key/", {})
        for _ in range(MISSING)
    ]
    assert {(r.status, r.code) for r in missing} == {(404, "key_not_found")}
    items = [{"context": CONTEXT}] * BATCHED + [{"context": "not an object"}]
    batch = _post(
        node, KEY_USER, f"{service_path(SERVICE)}/generate-data-key/batch/", {"items": items}
    )
    assert batch.status == 200, batch
    assert [r["ok"] for r in batch.body["results"]] == [True] * BATCHED + [False]
    batch_error = batch.body["results"][-1]["error"]["code"]
    time.sleep(1.5)  # the audit sealer's rounds (every 0.5 s) chain the events
    text = node.scrape()
    delta = Delta(before, text)

    ops = {"name": "kcm_datakey_operations_total", "tenant": "met"}

    def operations(operation: str, outcome: str, key: str = key_id) -> float:
        return delta(**ops, service_key_id=key, operation=operation, outcome=outcome)

    assert value(before, **ops, service_key_id=key_id, outcome="ok") == len(warm)
    assert operations("generate-data-key", "ok") == len(generated) + BATCHED
    assert operations("generate-data-key", batch_error) == 1
    assert operations("decrypt-data-key", "ok") == DECRYPTED
    assert operations("decrypt-data-key", "context_mismatch") == MISMATCHED
    assert operations("generate-data-key", "key_not_found", key="unknown") == MISSING
    all_operations = len(generated) + DECRYPTED + MISMATCHED + MISSING + BATCHED + 1
    assert delta(**ops) == all_operations

    # Requests by URL pattern name and status, each counted once, whichever worker served it.
    latency = "kcm_http_request_duration_seconds_count"
    route = "api:service-key-generate-data-key"
    assert delta(latency, route=route, method="POST", status="200") == len(generated)
    assert delta(latency, route=route, method="POST", status="404") == MISSING
    assert delta(latency, route=f"{route}-batch", method="POST", status="200") == 1
    for status, count in Counter(str(r.status) for r in opened).items():
        assert delta(latency, route="api:service-key-decrypt-data-key", status=status) == count
    assert value(text, latency, route="api:customer-keys", status="201") == 1
    assert value(text, latency, route="api:service-keys", status="201") == 2

    # The key cache, warm: every lookup of the existing key hits, the missing one misses each
    # time, nothing is evicted, and neither the L2 nor the HSM is asked for anything.
    lookups = all_operations - BATCHED  # a batch looks its key up once
    assert delta("kcm_key_cache_hits_total", level="L3") == lookups - MISSING
    assert delta("kcm_key_cache_misses_total", level="L3") == MISSING
    assert delta("kcm_key_cache_evictions_total") == 0
    assert delta("kcm_key_cache_hits_total", level="L2") == 0
    assert delta("kcm_key_cache_misses_total", level="L2") == 0
    calls = "kcm_keystore_call_duration_seconds_count"
    assert delta(calls) == 0
    # Cold, before: each L2 miss was one HSM decrypt; the L1 was created in the HSM.
    assert value(text, calls, keystore="pkcs11", operation="decrypt") == value(
        text, "kcm_key_cache_misses_total", level="L2"
    )
    assert value(text, calls, keystore="pkcs11", operation="create_root_key") == 1
    assert value(text, "kcm_keystore_call_errors_total") == 0

    # GCM usage: the gauge shows what the database says was reserved for the version.
    detail = call(node.stack, node.tenant, KEY_USER, "GET", f"{service_path(SERVICE)}/").body
    reserved = detail["versions"][0]["usage_reserved"]
    assert reserved >= len(warm) + len(generated) + BATCHED + 1
    assert value(text, "kcm_gcm_usage_reserved", service_key_id=key_id, version="1") == reserved
    assert value(text, "kcm_gcm_usage_limit") == 2**32 - 2**24

    assert delta("kcm_audit_seal_lag_seconds_count") >= 1
    assert value(text, "kcm_audit_seal_failures_total") == 0

    # The Celery worker's processes count too: a task opens a data key in a pool process,
    # and the worker rewraps both service keys when the L2 is rotated.
    for_worker = _post(
        node, KEY_USER, f"{service_path(SERVICE)}/generate-data-key/", {"context": PROBE_CONTEXT}
    )
    probe = WorkerProbe(node.stack).probe(
        node.tenant, for_worker.body["ciphertext"], service=SERVICE
    )
    assert probe == {"ok": True}
    rotated = _post(node, KEY_ADMIN, f"/api/v1/rotation/keys/{ids['l2']}/rotate/", {})
    assert rotated.status == 202, rotated
    job = _wait_for_job(node, rotated.body["job"]["id"])
    assert (job["state"], job["done"]) == ("succeeded", 2), job

    rewrap = {"tenant": "met", "level": "L2"}

    # The worker counts the finished job just after the commit that made the API say so.
    def counted(d: Delta) -> bool:
        finished = d("kcm_rewrap_jobs_finished_total", **rewrap, state="succeeded")
        return (finished, value(d.after, "kcm_rewrap_jobs_running")) == (1, 0)

    delta = poll(lambda: Delta(text, node.scrape()), counted, 10, every=0.1)
    assert delta(**ops, service_key_id=key_id, operation="decrypt-data-key", outcome="ok") == 1
    assert delta("kcm_rewrap_children_total", **rewrap, outcome="rewrapped") == 2
    assert delta("kcm_rewrap_children_total", outcome="failed") == 0
    assert delta("kcm_rewrap_jobs_finished_total", **rewrap, state="succeeded") == 1
    assert value(delta.after, "kcm_rewrap_jobs_running") == 0
    # The rotation wrapped the new L2 version under the L1, in the HSM.
    assert delta(calls, keystore="pkcs11", operation="encrypt") == 1


def _wait_for_listeners(node: Node, count: int, timeout: float = 30) -> None:
    """Until `count` processes listen for key-chain revocations (each flushes its cache once
    when it starts listening: that must not fall into the measured traffic)."""
    deadline = time.monotonic() + timeout
    with node.stack._admin_connection() as conn:
        while True:
            listening = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                " AND application_name = 'kcm-keychain-listener' AND query LIKE 'LISTEN%%'",
                [node.stack.database],
            ).fetchone()
            if listening and listening[0] >= count:
                return
            assert time.monotonic() < deadline, f"{listening} of {count} listeners"
            time.sleep(0.1)


def _wait_for_job(node: Node, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = call(
            node.stack, node.tenant, KEY_ADMIN, "GET", f"/api/v1/rotation/jobs/{job_id}/"
        ).body
        if job["state"] not in ("queued", "running") or time.monotonic() > deadline:
            return dict(job)
        time.sleep(0.1)


def test_metrics_are_not_served_on_the_public_port(node: Node) -> None:
    for host in (node.tenant.host, "localhost"):
        for path in ("/metrics", "/metrics/"):
            status, _, _ = node.stack.request("GET", path, host=host)
            assert status == 404, (host, path, status)


def test_the_listener_answers_on_loopback_only(node: Node) -> None:
    assert node.scrape().startswith("# HELP")
    # Bound to 127.0.0.1 itself, not to every address: another loopback address is refused.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", node.metrics_port), timeout=5).close()


def test_no_key_name_context_or_token_reaches_the_exposition(node: Node) -> None:
    # After the traffic of the first test (same module, same stack): every label is an id.
    text = node.scrape()
    assert "kcm_datakey_operations_total" in text
    secrets = [L1_NAME, SERVICE, OTHER_SERVICE, MISSING_SERVICE, "ctx-value", "purpose"]
    secrets += [token.split("_")[-1] for token in node.tenant.tokens.values()]
    for secret in secrets:
        assert secret not in text, secret
