"""Two complete KCM nodes on one PostgreSQL through a transaction-pooling PgBouncer, for e2e
tests: each node its own gunicorn (own port) and its own Celery worker; both share the
database, the broker and the HSM token, as two machines behind a load balancer would.

    with TwoNodes() as nodes:
        nodes.a.request(...), nodes.b.request(...)

The database (`kcm_e2e_<random>`) is migrated straight on PostgreSQL, as docs/operations.md
says to deploy; the nodes reach it through PgBouncer (KCM_DATABASE_POOLING=transaction) and
keep a direct connection only for LISTEN and the rewrap locks (KCM_DATABASE_DIRECT_URL). The
broker is the embedded filesystem one in a folder both nodes share, polled every 5 ms
(bench.celery_fastpoll), so that the kill-switch figures time the revocation, not the broker.
Each worker also consumes a queue of its own (`node-a`, `node-b`), so a test can reach either.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from celery import Celery
from celery.result import AsyncResult

from tests.pgbouncerkit import PgBouncer

from .stack import LiveStack, _Signals, free_port
from .tenantkit import CONTEXT, PROBE_TASK, Tenant


class Node(LiveStack):
    """One node of a TwoNodes deployment: no database of its own (stop() drops nothing)."""

    def __init__(self, name: str, *, env: dict[str, str], web_workers: int = 2) -> None:
        super().__init__(web_workers=web_workers, celery_pool="solo", env=env)
        self.name = name
        self.queue = f"node-{name}"

    def _start(self) -> None:
        _Signals.register(self)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"kcm-node-{self.name}-"))
        self.env = {**self.base_env, "DJANGO_SETTINGS_MODULE": "kms_project.settings"}
        self.env.pop("KCM_BROKER_URL", None)
        self.port = free_port()
        python = sys.executable
        self._spawn(
            "web",
            [python, "-m", "gunicorn", "-c", "python:kms_project.gunicorn_conf",
             "-b", f"127.0.0.1:{self.port}", "-w", str(self.web_workers)],
        )  # fmt: skip
        self._spawn(
            "worker",
            [python, "-m", "celery", "-A", "bench.celery_fastpoll", "worker", "-l", "info",
             "--pool", "solo", "-n", f"{self.queue}@%h", "-Q", f"celery,kcm-rewrap,{self.queue}",
             "-I", "tests.e2e.probe_tasks"],
        )  # fmt: skip
        self._wait_healthy()
        self.wait_for_log("worker", "ready.")


class TwoNodes:
    def __init__(self, *, pool_size: int = 6, web_workers: int = 2) -> None:
        self.pool_size = pool_size
        self.web_workers = web_workers
        self.admin = LiveStack(celery_pool=None)  # creates, migrates and drops the database
        self.bouncer: PgBouncer | None = None
        self.shared: Path | None = None
        self.nodes: list[Node] = []
        self.probe: Celery | None = None

    @property
    def a(self) -> Node:
        return self.nodes[0]

    @property
    def b(self) -> Node:
        return self.nodes[1]

    def __enter__(self) -> TwoNodes:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        admin = self.admin
        admin.base_env = {**admin.base_env}
        # The admin stack only migrates: its web server is not needed.
        admin.tmp = Path(tempfile.mkdtemp(prefix="kcm-e2e-admin-"))
        admin.env = {
            **admin.base_env,
            "KCM_DATABASE_URL": admin._database_url(admin.database),
            "KCM_STATE_DIR": str(admin.tmp / "state"),
            "DJANGO_SETTINGS_MODULE": "kms_project.settings",
        }
        _Signals.register(admin)
        admin._create_database()
        admin.manage("kcm_migrate")
        direct = admin.env["KCM_DATABASE_URL"]
        self.bouncer = PgBouncer(direct, pool_size=self.pool_size)
        self.bouncer.start()
        self.shared = Path(tempfile.mkdtemp(prefix="kcm-two-nodes-"))
        state = self.shared / "state"
        for folder in ("queue", "processed", "control"):
            (state / "broker" / folder).mkdir(parents=True)
        (self.shared / "results").mkdir()
        env = {
            **os.environ,
            "KCM_DATABASE_URL": self.bouncer.url(admin.database),
            "KCM_DATABASE_POOLING": "transaction",
            "KCM_DATABASE_DIRECT_URL": direct,
            "KCM_STATE_DIR": str(state),
            "KCM_RESULT_BACKEND": (self.shared / "results").as_uri(),
            "KCM_REWRAP_BATCH_SIZE": "50",  # a job of several batches, each its own transaction
        }
        for name in ("a", "b"):
            node = Node(name, env=env, web_workers=self.web_workers)
            self.nodes.append(node)
            node.start()
        self.probe = _probe_app(state / "broker", env["KCM_RESULT_BACKEND"])

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes.clear()
        if self.bouncer is not None:
            self.bouncer.stop()
            self.bouncer = None
        self.admin.stop()  # drops the database
        if self.shared is not None:
            shutil.rmtree(self.shared, ignore_errors=True)
            self.shared = None

    def probe_send(self, node: Node, tenant: Tenant, ciphertext: str) -> AsyncResult:
        """Queue a `service_key_probe` (decrypt `ciphertext` under `payments`) for `node`'s
        Celery worker."""
        assert self.probe is not None
        return self.probe.send_task(
            PROBE_TASK,
            kwargs={"service_key": "payments", "ciphertext": ciphertext, "context": CONTEXT},
            headers={"_schema_name": tenant.schema},
            ignore_result=False,
            queue=node.queue,
        )


def _probe_app(broker: Path, backend: str) -> Celery:
    app = Celery("kcm-two-nodes-probe", broker="kcmfs://", backend=backend, set_as_current=False)
    app.conf.update(
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
    return app


def result_if_ready(result: AsyncResult) -> dict[str, Any] | None:
    """The probe's result once it has one (and forgets it), else None."""
    if not result.ready():
        return None
    value = dict(result.get())
    with contextlib.suppress(Exception):
        result.forget()
    return value
