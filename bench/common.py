"""What the benchmarks share: a deployment with a key chain, an HTTP load generator, process
memory, percentiles and the report format (human lines, then one JSON line)."""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import math
import os
import select
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.stack import RATE_LIMITS_AWAY, LiveStack
from tests.e2e.tenantkit import (
    CONTEXT,
    KEY_ADMIN,
    KEY_USER,
    Tenant,
    create_chain,
    provision_tenant,
    service_path,
    stack_with_results,
    web_worker_pids,
)

SERVICE = service_path()


@dataclass
class Deployment:
    stack: LiveStack
    tenant: Tenant
    l1_id: str

    def client(self, role: str = KEY_USER) -> HttpClient:
        return HttpClient(self.stack.port, self.tenant.host, self.tenant.tokens[role])


@contextmanager
def deployment(*, web_workers: int = 2, worker_app: str | None = None) -> Iterator[Deployment]:
    """A LiveStack with tenant 'bench', a key admin and a key user token, and the chain
    L1 'root' → L2 → L3 'payments'. With `worker_app`, also a solo Celery worker running that
    Celery application module (results in a private file backend). The API's rate limits are
    lifted: a bench measures KCM's throughput, not its limiter's (one token at 1,400 req/s
    would otherwise get hundreds of 429s)."""
    with stack_with_results(RATE_LIMITS_AWAY, web_workers=web_workers, celery_pool=None) as stack:
        if worker_app:
            start_celery_worker(stack, worker_app)
        tenant = provision_tenant(stack, "bench", (KEY_ADMIN, KEY_USER))
        yield Deployment(stack, tenant, create_chain(stack, tenant))


def start_celery_worker(stack: LiveStack, app: str) -> None:
    """A solo-pool worker for Celery application `app`, stopped with the stack (LiveStack
    itself only starts workers of the `kms_project` application). It also runs the e2e probe
    task (tests.e2e.probe_tasks), which bench.killswitch sends. It logs at INFO whatever the
    stack's KCM_LOG_LEVEL (KCM's logging replaces Celery's -l option): its "ready." line is how
    we know it listens, and bench.rewrap runs the stack at WARNING."""
    stack._spawn(
        "worker",
        [sys.executable, "-m", "celery", "-A", app, "worker", "--pool", "solo",
         "-I", "tests.e2e.probe_tasks"],
        env={"KCM_LOG_LEVEL": "INFO"},
    )  # fmt: skip
    stack.wait_for_log("worker", "ready.")


def django_setup(stack: LiveStack) -> None:
    """Configure Django in this process against the stack's database and HSM token."""
    import django

    os.environ.update(stack.env)
    # No revocations to hear in a benchmark, and no connection left open when the stack's
    # database is dropped.
    os.environ["KCM_KEY_CACHE_LISTEN"] = "false"
    django.setup()


def django_teardown() -> None:
    from django.db import connections

    connections.close_all()


class HttpClient:
    """One client connection as a tenant's API token, kept alive between requests and reopened
    whenever the server closes it."""

    def __init__(self, port: int, host: str, token: str) -> None:
        self.port, self.host, self.token = port, host, token
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {
            "Host": f"{host}:{port}",
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
        }

    def send(self, method: str, path: str, body: bytes | None = None) -> tuple[int, int, bytes]:
        """(status, serving PID or 0, body)."""
        self._drop_if_closed_by_server()
        try:
            self.connection.request(method, path, body=body, headers=self.headers)
            response = self.connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            raise
        return response.status, int(response.getheader("X-KCM-Worker") or 0), data

    def _drop_if_closed_by_server(self) -> None:
        """A kept-alive connection the server has since closed (gunicorn closes idle ones
        after a few seconds) reads as end-of-file: reconnect before sending, as HTTP client
        libraries do, instead of failing the request."""
        sock = self.connection.sock
        if sock is None:
            return
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            self.connection.close()

    def post_json(self, path: str, payload: Any) -> tuple[int, int, Any]:
        status, pid, data = self.send("POST", path, json.dumps(payload).encode())
        return status, pid, json.loads(data) if data else None

    def close(self) -> None:
        self.connection.close()

    def address(self) -> tuple[int, str, str]:
        """(port, host, token): what another process needs to make the same client."""
        return self.port, self.host, self.token


def spread_clients(stack: LiveStack, host: str, token: str, count: int) -> list[HttpClient]:
    """`count` kept-alive clients spread as evenly as `count` allows over the stack's web
    workers. A connection stays with the worker that accepted it, and a few connections left
    to the kernel split unevenly (8 over 2 workers: 5/3 and 6/2 seen), so that one worker's
    interpreter is saturated while the other waits, and a deployment's rate depends on that
    draw more than on what the bench compares."""
    workers = sorted(web_worker_pids(stack))
    quota = {
        pid: count // len(workers) + (n < count % len(workers)) for n, pid in enumerate(workers)
    }
    kept: list[HttpClient] = []
    for _ in range(50 * count):
        client = HttpClient(stack.port, host, token)
        _, pid, _ = client.send("GET", "/api/v1/service-keys/")
        if quota.get(pid, 0) > 0:
            quota[pid] -= 1
            kept.append(client)
            if len(kept) == count:
                return kept
        else:
            client.close()
    raise RuntimeError(f"could not spread {count} connections over workers {workers}: {quota}")


def make_data_keys(client: HttpClient, count: int, service: str = "payments") -> list[str]:
    """`count` wrapped data keys of `service` (one batch request), for decrypts to open."""
    status, _, body = client.post_json(
        f"{service_path(service)}/generate-data-key/batch/",
        {"items": [{"context": CONTEXT, "include_plaintext": False}] * count},
    )
    assert status == 200, body
    return [item["ciphertext"] for item in body["results"]]


def crypto_operation(
    client: HttpClient, ciphertexts: list[str], service: str = "payments"
) -> Operation:
    """Alternately generate a data key and decrypt one of `ciphertexts`, under `service`."""
    path = service_path(service)
    generate = json.dumps({"context": CONTEXT}).encode()
    decrypts = itertools.cycle(
        [json.dumps({"ciphertext": c, "context": CONTEXT}).encode() for c in ciphertexts]
    )
    turn = itertools.cycle((True, False))

    def operation() -> int:
        if next(turn):
            return client.send("POST", f"{path}/generate-data-key/", generate)[0]
        return client.send("POST", f"{path}/decrypt-data-key/", next(decrypts))[0]

    return operation


def payload_b64(size: int = 64) -> str:
    return base64.b64encode(bytes(size)).decode()


@dataclass
class LoadResult:
    seconds: float
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # exceptions by type

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + sum(self.failures.values())

    @property
    def errors(self) -> int:
        return self.requests - self.statuses[200]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


Operation = Callable[[], int]  # sends one request, returns its status


def total(results: list[LoadResult]) -> LoadResult:
    """Several rounds' results as one."""
    summed = LoadResult(seconds=sum(r.seconds for r in results))
    for result in results:
        summed.statuses.update(result.statuses)
        summed.failures.update(result.failures)
    return summed


def run_load(operations: Sequence[Operation], seconds: float) -> LoadResult:
    """Each operation in its own thread, back to back, for `seconds`."""
    result = LoadResult(seconds=0.0)
    lock = threading.Lock()
    start = threading.Event()
    deadline = [0.0]

    def loop(operation: Operation) -> None:
        statuses: Counter[int] = Counter()
        failures: Counter[str] = Counter()
        start.wait()
        while time.monotonic() < deadline[0]:
            try:
                statuses[operation()] += 1
            except (OSError, http.client.HTTPException) as exc:
                failures[type(exc).__name__] += 1
        with lock:
            result.statuses.update(statuses)
            result.failures.update(failures)

    threads = [threading.Thread(target=loop, args=(op,), daemon=True) for op in operations]
    for thread in threads:
        thread.start()
    began = time.monotonic()
    deadline[0] = began + seconds
    start.set()
    for thread in threads:
        thread.join()
    result.seconds = time.monotonic() - began
    return result


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for {pid}")


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (so p99 of fewer than 100 values is the maximum)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def report(lines: Sequence[str], figures: dict[str, Any]) -> None:
    """The human summary, then the JSON line that must come last."""
    for line in lines:
        print(line)
    print(json.dumps(figures), flush=True)
