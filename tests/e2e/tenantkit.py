"""Tenants, key chains and key-user calls on a LiveStack, for e2e tests and benchmarks.

    tenant = provision_tenant(stack, "acme", (KEY_ADMIN, KEY_USER))
    l1_id = create_chain(stack, tenant)
    reply = call(stack, tenant, KEY_USER, "POST", f"{service_path()}/generate-data-key/", {})
    reply.status, reply.pid, reply.code

Every reply names the process that served it (the `X-KCM-Worker` header), so that a test can
check each gunicorn worker separately. `WorkerProbe` runs the `service_key_probe` task in the
stack's Celery worker and waits for its result in a filesystem result backend.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from celery import Celery
from celery.result import AsyncResult

import kms_project.broker  # noqa: F401  (registers the kcmfs transport)

from .stack import LiveStack

KEY_ADMIN = "key_admin"
KEY_USER = "key_user"
PROBE_TASK = "tests.e2e.probe_tasks.service_key_probe"
CONTEXT = {"purpose": "e2e"}


@dataclass(frozen=True)
class Tenant:
    slug: str
    host: str
    schema: str
    tokens: dict[str, str]  # role -> API token


@dataclass(frozen=True)
class Reply:
    status: int
    pid: int | None  # the process that served the request
    body: Any

    @property
    def code(self) -> str | None:
        """The problem `code` of a refusal, else None."""
        return self.body.get("code") if isinstance(self.body, dict) else None


_PROVISION = """
import json
from apps.tenants import services
from apps.tenants.tokens import api_token_create
tenant = services.tenant_create(slug={slug!r}, name={slug!r})
tokens = {{
    role: api_token_create(
        tenant=tenant, name="e2e " + role, role=role, created_by_id=None
    )[1]
    for role in {roles!r}
}}
print(json.dumps({{"schema": tenant.schema_name, "tokens": tokens}}))
"""


def provision_tenant(stack: LiveStack, slug: str, roles: tuple[str, ...]) -> Tenant:
    """Create tenant `slug` and one API token per role in `roles`."""
    output = stack.manage("shell", "-c", _PROVISION.format(slug=slug, roles=list(roles))).stdout
    made = json.loads(output.strip().splitlines()[-1])
    domain = stack.env.get("KCM_BASE_DOMAIN", "localhost")
    return Tenant(slug=slug, host=f"{slug}.{domain}", schema=made["schema"], tokens=made["tokens"])


def call(
    stack: LiveStack, tenant: Tenant, role: str, method: str, path: str, body: Any = None
) -> Reply:
    """One API request as `role` of `tenant` (a new connection each time)."""
    status, headers, raw = stack.request(
        method,
        path,
        host=tenant.host,
        json=body,
        headers={"Authorization": f"Bearer {tenant.tokens[role]}"},
    )
    pid = headers.get("X-KCM-Worker")
    return Reply(status, int(pid) if pid else None, json.loads(raw) if raw else None)


def service_path(name: str = "payments") -> str:
    return f"/api/v1/service-keys/{name}"


def create_chain(
    stack: LiveStack, tenant: Tenant, services: tuple[str, ...] = ("payments",)
) -> str:
    """L1 'root' (in the HSM) → L2 → an L3 per name in `services`; returns the L1's id."""
    l1 = call(stack, tenant, KEY_ADMIN, "POST", "/api/v1/customer-keys/", {"name": "root"})
    assert l1.status == 201, l1
    for name in services:
        l3 = call(stack, tenant, KEY_ADMIN, "POST", "/api/v1/service-keys/", {"name": name})
        assert l3.status == 201, l3
    return str(l1.body["id"])


def key_action(stack: LiveStack, tenant: Tenant, key_id: str, action: str) -> Reply:
    """POST /api/v1/keys/<id>/<action>/ as key admin (enable, disable, ...)."""
    return call(stack, tenant, KEY_ADMIN, "POST", f"/api/v1/keys/{key_id}/{action}/", {})


def web_worker_pids(stack: LiveStack) -> set[int]:
    """The PIDs of the gunicorn master's children (its workers) right now."""
    master = stack.procs["web"].pid
    children: set[int] = set()
    for task in Path(f"/proc/{master}/task").iterdir():
        children.update(int(pid) for pid in (task / "children").read_text().split())
    return children


def listening_worker_pids(stack: LiveStack) -> set[int]:
    """The web workers that hold a socket listening on the stack's port right now.

    Under granian on Linux each worker binds its own SO_REUSEPORT socket once it is ready to
    serve, and the main process holds none: a worker that is running is not yet one that
    takes connections."""
    listening: set[str] = set()  # socket inodes in state LISTEN on the port
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == stack.port:
                    listening.add(fields[9])
    holders: set[int] = set()
    for pid in web_worker_pids(stack):
        try:
            targets = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
        except OSError:  # it died meanwhile
            continue
        if any(target == f"socket:[{inode}]" for inode in listening for target in targets):
            holders.add(pid)
    return holders


def on_every_worker(
    send: Callable[[], Reply], pids: set[int], *, parallel: int = 4, max_rounds: int = 200
) -> list[Reply]:
    """Send `send()` in rounds of `parallel` concurrent requests until every PID in `pids` has
    answered at least once; returns every reply. Sequential requests may all land on one
    gunicorn worker; concurrent ones spread over them."""
    replies: list[Reply] = []
    with ThreadPoolExecutor(parallel) as pool:
        for _ in range(max_rounds):
            replies += pool.map(lambda _: send(), range(parallel))
            if pids <= {reply.pid for reply in replies}:
                return replies
    served = {reply.pid for reply in replies}
    raise AssertionError(f"workers {pids - served} never answered; replies came from {served}")


def serving_workers(stack: LiveStack, tenant: Tenant, timeout: float = 60.0) -> set[int]:
    """The web workers' PIDs, once there are all of them and each has answered a request.

    What a test that SIGKILLs workers should kill: a worker still starting may be logging in
    to SoftHSM2, which rewrites the token's file as it does (tools/kcmstack/hsm.py); a kill
    at that moment breaks SoftHSM2's token, which no real HSM does and no KCM fault test
    means to test."""

    def probe() -> Reply:
        try:
            return call(stack, tenant, KEY_USER, "GET", f"{service_path()}/")
        except OSError:  # the server is still restarting its workers
            time.sleep(0.05)
            return Reply(0, None, None)

    deadline = time.monotonic() + timeout
    while True:
        pids = web_worker_pids(stack)
        try:
            if len(pids) < stack.web_workers:
                raise AssertionError(f"{len(pids)} of {stack.web_workers} web workers running")
            on_every_worker(probe, pids, max_rounds=50)
            return pids
        except AssertionError as exc:  # not all back yet, or replaced meanwhile: look again
            if time.monotonic() > deadline:
                # What the server said of its workers is what explains it.
                raise AssertionError(
                    f"{exc}; the web log ends:\n{stack.log('web')[-4000:]}"
                ) from exc
            time.sleep(0.05)


class WorkerProbe:
    """Runs `service_key_probe` in the stack's Celery worker, in a tenant's schema.

    A plain Celery client on the stack's filesystem broker (the folders kms_project.settings
    gives the embedded broker under KCM_STATE_DIR), publishing atomically (see
    `kms_project.broker`), and on the stack's result backend.
    """

    def __init__(self, stack: LiveStack, *, poll: float = 0.05) -> None:
        broker = Path(stack.env["KCM_STATE_DIR"]) / "broker"
        self.poll = poll
        self.app = Celery(
            "kcm-e2e-probe",
            broker="kcmfs://",  # kms_project.broker: publishes atomically
            backend=stack.env["KCM_RESULT_BACKEND"],
            set_as_current=False,
        )
        self.app.conf.update(
            broker_transport_options={
                "data_folder_in": str(broker / "queue"),
                "data_folder_out": str(broker / "queue"),
                "processed_folder": str(broker / "processed"),
                "control_folder": str(broker / "control"),
                "store_processed": False,
            },
            task_serializer="json",
            result_serializer="json",
            accept_content=["json"],
        )

    def send(self, tenant: Tenant, ciphertext: str, *, service: str = "payments") -> AsyncResult:
        """Queue one probe: it decrypts `ciphertext` under `service` in the worker."""
        return self.app.send_task(
            PROBE_TASK,
            kwargs={"service_key": service, "ciphertext": ciphertext, "context": CONTEXT},
            # tenant-schemas-celery switches the worker to the schema named in this header.
            headers={"_schema_name": tenant.schema},
            ignore_result=False,
        )

    def probe(
        self, tenant: Tenant, ciphertext: str, *, service: str = "payments", timeout: float = 60
    ) -> dict[str, Any]:
        """The task's result: {"ok": True} or {"ok": False, "code": ...}."""
        result = self.send(tenant, ciphertext, service=service)
        value = dict(result.get(timeout=timeout, interval=self.poll))
        result.forget()
        return value


T = TypeVar("T")


def poll(read: Callable[[], T], done: Callable[[T], bool], timeout: float, every: float = 0.2) -> T:
    """`read()` until `done` holds of what it read or `timeout` seconds have passed: the last
    value read (the caller's assertions say what is missing when it timed out)."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(every)


@contextmanager
def stack_with_results(
    extra_env: dict[str, str] | None = None, **options: Any
) -> Iterator[LiveStack]:
    """A LiveStack whose Celery worker stores results in a private folder (KCM_RESULT_BACKEND),
    with `extra_env` on top of this process's environment."""
    results = Path(tempfile.mkdtemp(prefix="kcm-results-"))
    try:
        env = {**os.environ, **(extra_env or {}), "KCM_RESULT_BACKEND": results.as_uri()}
        with LiveStack(env=env, **options) as stack:
            yield stack
    finally:
        shutil.rmtree(results, ignore_errors=True)
