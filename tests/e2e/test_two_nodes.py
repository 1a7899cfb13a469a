"""Issue 14, acceptance 2: two complete KCM nodes (each its own gunicorn and Celery worker)
against one PostgreSQL through PgBouncer in transaction-pooling mode (tests/e2e/twonodes.py).

1. A data-key load on both nodes, for two tenants, while each tenant's root key (L1) is
   rotated and its tenant key rewrapped by the workers, then acme's tenant key (L2) rotated and
   its 201 service keys rewrapped in batches: not one error, and the data keys made before
   still decrypt on either node.
2. Then the kill switch: disabling a root key on one node makes every process of both nodes
   (four gunicorn workers, two Celery workers) refuse, each with a warm key cache first; p99 of
   the slowest process per trial under 100 ms over 100 trials (so the 99th of them: with fewer
   than 100 the nearest-rank p99 is the maximum), and no request sent after the disable answer
   succeeds (figures printed with -s).
"""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from bench.common import HttpClient, percentile

from .rotationkit import in_stack
from .tenantkit import (
    CONTEXT,
    KEY_ADMIN,
    KEY_USER,
    Tenant,
    call,
    create_chain,
    key_action,
    provision_tenant,
    service_path,
    web_worker_pids,
)
from .twonodes import Node, TwoNodes, result_if_ready

pytestmark = pytest.mark.e2e

SERVICE = service_path()
SLUGS = ("acme", "globex")
LOAD_THREADS_PER_NODE = 2
KILL_SWITCH_TRIALS = 100  # about 0.3 s each
L3_UNDER_ACME = 200
GIVE_UP_SECONDS = 10.0


@dataclass
class World:
    nodes: TwoNodes
    tenants: dict[str, Tenant]
    roots: dict[str, str]  # slug -> L1 id
    made: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # (ciphertext, plain)

    def client(self, node: Node, slug: str) -> HttpClient:
        tenant = self.tenants[slug]
        return HttpClient(node.port, tenant.host, tenant.tokens[KEY_USER])


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with TwoNodes() as nodes:
        tenants, roots = {}, {}
        for slug, node in zip(SLUGS, (nodes.a, nodes.b), strict=True):
            # Provisioned through PgBouncer, on one node or the other.
            tenants[slug] = provision_tenant(node, slug, (KEY_ADMIN, KEY_USER))
            roots[slug] = create_chain(node, tenants[slug])
        # Children for a rewrap of more than one batch: acme's L2 wraps 200 more service keys.
        in_stack(nodes.a, tenants["acme"].schema, "bulk_service_keys", L3_UNDER_ACME)
        w = World(nodes, tenants, roots)
        for slug in SLUGS:
            w.made[slug] = []
            for node in (nodes.a, nodes.b):
                client = w.client(node, slug)
                for _ in range(3):
                    status, _, body = client.post_json(
                        f"{SERVICE}/generate-data-key/", {"context": CONTEXT}
                    )
                    assert status == 200, body
                    w.made[slug].append((body["ciphertext"], body["plaintext"]))
                client.close()
        yield w


class Load:
    """Key users of both tenants on both nodes: each thread generates a data key, then decrypts
    one made earlier (on either node) and checks the plaintext; every answer is recorded."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.stop = threading.Event()
        self.answers: Counter[tuple[str, int, str | None]] = Counter()
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self.run, args=(node, SLUGS[n % 2]), daemon=True)
            for node in (world.nodes.a, world.nodes.b)
            for n in range(LOAD_THREADS_PER_NODE)
        ]

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        self.seconds = time.monotonic() - self.started

    def run(self, node: Node, slug: str) -> None:
        client = self.world.client(node, slug)
        made = self.world.made[slug]
        turn = 0
        while not self.stop.is_set():
            answers = []
            status, _, body = client.post_json(
                f"{SERVICE}/generate-data-key/", {"context": CONTEXT}
            )
            answers.append((status, body.get("code") if status != 200 else None))
            ciphertext, plaintext = made[turn % len(made)]
            turn += 1
            status, _, body = client.post_json(
                f"{SERVICE}/decrypt-data-key/", {"ciphertext": ciphertext, "context": CONTEXT}
            )
            if status == 200 and body["plaintext"] != plaintext:
                status, body = 0, {"code": "wrong_plaintext"}
            answers.append((status, body.get("code") if status != 200 else None))
            with self.lock:
                for status, code in answers:
                    self.answers[(node.name, status, code)] += 1
        client.close()

    def total(self) -> int:
        return sum(self.answers.values())


def _wait_for_job(node: Node, tenant: Tenant, job_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = call(node, tenant, KEY_ADMIN, "GET", f"/api/v1/rotation/jobs/{job_id}/").body
        if job["state"] not in ("queued", "running"):
            return dict(job)
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_a_load_on_both_nodes_while_the_workers_rewrap_rotated_roots_has_no_error(
    world: World,
) -> None:
    nodes = world.nodes
    with Load(world) as load:
        time.sleep(1.0)
        jobs = {}
        # Each tenant's L1 rotated on a different node; the rewrap jobs go to either worker.
        for slug, node in zip(SLUGS, (nodes.a, nodes.b), strict=True):
            started = call(
                node, world.tenants[slug], KEY_ADMIN, "POST",
                f"/api/v1/rotation/keys/{world.roots[slug]}/rotate/", {},
            )  # fmt: skip
            assert started.status == 202, started
            jobs[slug] = started.body["job"]["id"]
        finished = {
            slug: _wait_for_job(nodes.b if slug == "acme" else nodes.a, world.tenants[slug], job)
            for slug, job in jobs.items()
        }
        # Then acme's L2, on the other node: its 201 service keys move in batches of 50.
        acme = world.tenants["acme"]
        l2_id = in_stack(nodes.a, acme.schema, "chain_census")["l2_id"]
        started = call(
            nodes.b, acme, KEY_ADMIN, "POST", f"/api/v1/rotation/keys/{l2_id}/rotate/", {}
        )
        assert started.status == 202, started
        l2_job = _wait_for_job(nodes.a, acme, started.body["job"]["id"])
        time.sleep(1.0)
    assert (l2_job["state"], l2_job["done"], l2_job["failed"]) == (
        "succeeded",
        L3_UNDER_ACME + 1,
        0,
    ), l2_job
    census = in_stack(nodes.b, acme.schema, "chain_census")
    assert census["l3_versions_by_parent"] == {"2": L3_UNDER_ACME + 1}, census
    for slug, job in finished.items():
        assert (job["state"], job["report"]) == ("succeeded", {"retired_versions": [1]}), job
        census = in_stack(nodes.a, world.tenants[slug].schema, "chain_census")
        assert census["l1_versions"] == {"1": "RETIRED", "2": "ENABLED"}, census
    errors = {key: n for key, n in load.answers.items() if key[1] != 200}
    assert errors == {}, errors
    by_node = Counter({name: n for (name, _, _), n in load.answers.items()})
    assert by_node["a"] > 50 and by_node["b"] > 50, by_node
    ran = {node.name: node.log("worker").count("rewrap_job_run[") for node in (nodes.a, nodes.b)}
    print(
        f"\ntwo nodes through PgBouncer (transaction mode): {load.total()} data-key operations "
        f"in {load.seconds:.1f} s ({load.total() / load.seconds:.0f}/s; node a "
        f"{by_node['a']}, node b {by_node['b']}), 0 errors; rewrap jobs "
        f"{ {s: (j['done'], j['failed']) for s, j in finished.items()} } (done, failed), "
        f"acme L2 {l2_job['done']} service keys rewrapped; "
        f"rewrap task log lines per worker {ran}"
    )
    for node in (nodes.a, nodes.b):
        assert "Traceback" not in node.log("worker"), node.log("worker")[-3000:]


@dataclass
class Trial:
    first_refusal_ms: dict[str, float] = field(default_factory=dict)
    late_successes: int = 0
    # How long each process's first refused request itself took (sent to answered).
    refusal_request_ms: list[float] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


class KillSwitch:
    """bench.killswitch over two nodes: every gunicorn worker and both Celery workers."""

    def __init__(self, world: World, slug: str) -> None:
        self.world = world
        self.slug = slug
        self.tenant = world.tenants[slug]
        self.nodes = (world.nodes.a, world.nodes.b)
        self.pids = {node.name: web_worker_pids(node) for node in self.nodes}
        self.processes = [f"web:{n}:{pid}" for n, pids in self.pids.items() for pid in pids]
        self.processes += [f"celery:{node.name}" for node in self.nodes]
        self.ciphertext = world.made[slug][0][0]
        self.body = {"ciphertext": self.ciphertext, "context": CONTEXT}

    def set_root(self, action: str) -> None:
        reply = key_action(self.nodes[0], self.tenant, self.world.roots[self.slug], action)
        assert reply.status == 200, reply

    def decrypt(self, client: HttpClient) -> tuple[int, int, str | None]:
        status, pid, body = client.post_json(f"{SERVICE}/decrypt-data-key/", self.body)
        return status, pid, body.get("code") if status != 200 else None

    def celery(self, node: Node) -> dict[str, Any]:
        pending = self.world.nodes.probe_send(node, self.tenant, self.ciphertext)
        deadline = time.monotonic() + GIVE_UP_SECONDS
        while time.monotonic() < deadline:
            value = result_if_ready(pending)
            if value is not None:
                return value
            time.sleep(0.002)
        raise AssertionError(f"node {node.name}'s worker did not answer a probe")

    def pin(self) -> dict[tuple[str, int], HttpClient]:
        """One kept-alive client per gunicorn worker of both nodes, each having just had a
        decrypt served by its worker (a warm cache there). A gthread worker keeps the
        connections it accepted, so a client stays with its worker while it keeps asking."""
        pinned: dict[tuple[str, int], HttpClient] = {}
        for node in self.nodes:
            for _ in range(50):
                if all((node.name, pid) in pinned for pid in self.pids[node.name]):
                    break
                # Connected concurrently, so that every worker accepts some.
                clients = [self.world.client(node, self.slug) for _ in range(4)]
                with ThreadPoolExecutor(len(clients)) as pool:
                    answers = list(pool.map(self.decrypt, clients))
                for client, (status, pid, code) in zip(clients, answers, strict=True):
                    assert status == 200, (status, code)
                    if (node.name, pid) in pinned:
                        client.close()
                    else:
                        pinned[(node.name, pid)] = client
            missing = {pid for pid in self.pids[node.name] if (node.name, pid) not in pinned}
            assert not missing, f"node {node.name}: workers {missing} accepted no connection"
        return pinned

    def trial(self, number: int) -> Trial:
        self.set_root("enable")
        pinned = self.pin()
        for node in self.nodes:
            assert self.celery(node) == {"ok": True}  # its cache warm too
        result = Trial()
        go, done = threading.Event(), threading.Event()
        lock = threading.Lock()
        t0 = [0.0]

        def refused(process: str) -> None:
            with lock:
                result.first_refusal_ms.setdefault(process, (time.monotonic() - t0[0]) * 1000)
                if len(result.first_refusal_ms) == len(self.processes):
                    done.set()

        def web(name: str, target: int, client: HttpClient) -> None:
            go.wait()
            while not done.is_set() and time.monotonic() - t0[0] < GIVE_UP_SECONDS:
                sent = time.monotonic()
                status, pid, code = self.decrypt(client)
                if status != 200 and f"web:{name}:{pid}" not in result.first_refusal_ms:
                    with lock:
                        result.refusal_request_ms.append((time.monotonic() - sent) * 1000)
                if pid != target:
                    client.close()  # the server closed it meanwhile: find our worker again
                if status == 200:
                    with lock:
                        result.late_successes += 1
                elif code == "key_disabled":
                    refused(f"web:{name}:{pid}")
                else:
                    result.unexpected.append(f"{status} {code}")
            client.close()

        def worker(node: Node) -> None:
            go.wait()
            while not done.is_set() and time.monotonic() - t0[0] < GIVE_UP_SECONDS:
                answer = self.celery(node)
                if answer == {"ok": True}:
                    with lock:
                        result.late_successes += 1
                elif answer.get("code") == "key_disabled":
                    refused(f"celery:{node.name}")
                else:
                    result.unexpected.append(repr(answer))

        threads = [
            threading.Thread(target=web, args=(name, pid, client))
            for (name, pid), client in pinned.items()
        ]
        threads += [threading.Thread(target=worker, args=(node,)) for node in self.nodes]
        for thread in threads:
            thread.start()
        node = self.nodes[number % 2]
        reply = key_action(node, self.tenant, self.world.roots[self.slug], "disable")
        t0[0] = time.monotonic()
        go.set()
        assert reply.status == 200, reply
        for thread in threads:
            thread.join()
        return result


def test_a_kill_switch_on_one_node_stops_every_process_of_both_within_100_ms(
    world: World,
) -> None:
    switch = KillSwitch(world, "acme")
    assert len(switch.processes) == 6, switch.processes
    # Not counted: a process's first refusal ever runs code it had not needed yet (measured
    # once at 573 ms in the server); the kill switch is timed on processes that have refused
    # before, as they have in production after their first minutes.
    switch.trial(-1)
    # This process is the clients: a full collection of everything the tests before left
    # (the whole suite runs in one process) would stall every client thread at once, and be
    # timed as the kill switch's. Frozen, those objects are not scanned again.
    gc.collect()
    gc.freeze()
    pauses: list[float] = []
    began = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses.append((time.perf_counter() - began[0]) * 1000)

    gc.callbacks.append(timed)
    try:
        trials = [switch.trial(number) for number in range(KILL_SWITCH_TRIALS)]
    finally:
        gc.callbacks.remove(timed)
        gc.unfreeze()
    switch.set_root("enable")
    for trial in trials:
        missing = set(switch.processes) - trial.first_refusal_ms.keys()
        assert not missing, f"never refused: {missing}"
        assert trial.unexpected == [], trial.unexpected
    slowest = [max(t.first_refusal_ms.values()) for t in trials]
    web = [ms for t in trials for p, ms in t.first_refusal_ms.items() if p.startswith("web")]
    celery = [ms for t in trials for p, ms in t.first_refusal_ms.items() if p.startswith("cel")]
    late = sum(t.late_successes for t in trials)
    own = [ms for t in trials for ms in t.refusal_request_ms]
    p50, p99 = percentile(slowest, 50), percentile(slowest, 99)
    print(
        f"\nkill switch over two nodes through PgBouncer: {KILL_SWITCH_TRIALS} trials, "
        f"{len(switch.processes)} processes; slowest process per trial p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms, max {max(slowest):.1f} ms; gunicorn workers p99 "
        f"{percentile(web, 99):.1f} ms; celery workers p99 {percentile(celery, 99):.1f} ms; "
        f"requests sent after the disable answer that still succeeded: {late}; "
        f"a first refused request itself took p50 {percentile(own, 50):.1f} ms, "
        f"max {max(own):.1f} ms; the clients' own garbage collections: {len(pauses)}, longest "
        f"{max(pauses, default=0):.1f} ms"
    )
    assert late == 0, late
    assert p99 < 100, sorted(slowest)[-5:]
    # And the other tenant, on the same server connections, never noticed.
    other = call(world.nodes.b, world.tenants["globex"], KEY_USER, "POST",
                 f"{SERVICE}/generate-data-key/", {"context": CONTEXT})  # fmt: skip
    assert other.status == 200, other
