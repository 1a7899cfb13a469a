"""The kill switch across real processes: disabling a customer key (L1) stops every gunicorn
worker and the Celery worker from using anything below it; enabling it restores them all.

Each process has warmed its own key cache first, so a refusal proves that the revocation
reached that process, not merely that a cold cache read the new state from the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .stack import LiveStack
from .tenantkit import (
    CONTEXT,
    KEY_ADMIN,
    KEY_USER,
    Reply,
    Tenant,
    WorkerProbe,
    call,
    create_chain,
    key_action,
    on_every_worker,
    provision_tenant,
    service_path,
    stack_with_results,
    web_worker_pids,
)

pytestmark = pytest.mark.e2e


@dataclass
class Deployment:
    stack: LiveStack
    tenant: Tenant
    l1_id: str
    ciphertext: str
    web_pids: set[int]
    worker: WorkerProbe

    def decrypt(self) -> Reply:
        return call(
            self.stack,
            self.tenant,
            KEY_USER,
            "POST",
            f"{service_path()}/decrypt-data-key/",
            {"ciphertext": self.ciphertext, "context": CONTEXT},
        )

    def generate(self) -> Reply:
        return call(
            self.stack,
            self.tenant,
            KEY_USER,
            "POST",
            f"{service_path()}/generate-data-key/",
            {"context": CONTEXT},
        )


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    with stack_with_results(web_workers=2, celery_pool="solo") as stack:
        tenant = provision_tenant(stack, "acme", (KEY_ADMIN, KEY_USER))
        l1_id = create_chain(stack, tenant)
        made = call(
            stack, tenant, KEY_USER, "POST", f"{service_path()}/generate-data-key/",
            {"context": CONTEXT},
        )  # fmt: skip
        assert made.status == 200, made
        pids = web_worker_pids(stack)
        assert len(pids) == 2, pids
        yield Deployment(stack, tenant, l1_id, made.body["ciphertext"], pids, WorkerProbe(stack))


def statuses(replies: list[Reply]) -> set[tuple[int, str | None]]:
    return {(reply.status, reply.code) for reply in replies}


def test_disabling_the_root_key_stops_every_process_and_enabling_it_restores_them(
    deployment: Deployment,
) -> None:
    d = deployment
    # Warm-up: every gunicorn worker and the Celery worker hold the unwrapped chain.
    warm = on_every_worker(d.decrypt, d.web_pids)
    assert statuses(warm) == {(200, None)}
    assert d.worker.probe(d.tenant, d.ciphertext) == {"ok": True}

    disabled = key_action(d.stack, d.tenant, d.l1_id, "disable")
    assert (disabled.status, disabled.body["state"]) == (200, "DISABLED")

    refused = on_every_worker(d.decrypt, d.web_pids)
    assert {reply.pid for reply in refused} == d.web_pids
    assert statuses(refused) == {(409, "key_disabled")}
    assert statuses(on_every_worker(d.generate, d.web_pids)) == {(409, "key_disabled")}
    assert d.worker.probe(d.tenant, d.ciphertext) == {"ok": False, "code": "key_disabled"}

    enabled = key_action(d.stack, d.tenant, d.l1_id, "enable")
    assert (enabled.status, enabled.body["state"]) == (200, "ENABLED")

    restored = on_every_worker(d.decrypt, d.web_pids)
    assert statuses(restored) == {(200, None)}
    assert statuses(on_every_worker(d.generate, d.web_pids)) == {(200, None)}
    assert d.worker.probe(d.tenant, d.ciphertext) == {"ok": True}
    # The same worker processes throughout: nothing was restarted to get there.
    assert web_worker_pids(d.stack) == d.web_pids


def test_a_disabled_service_key_is_refused_everywhere_while_its_root_stays_usable(
    deployment: Deployment,
) -> None:
    d = deployment
    assert statuses(on_every_worker(d.decrypt, d.web_pids)) == {(200, None)}
    detail = call(d.stack, d.tenant, KEY_ADMIN, "GET", f"{service_path()}/")
    assert detail.status == 200, detail
    l3_id = str(detail.body["id"])

    assert key_action(d.stack, d.tenant, l3_id, "disable").status == 200
    try:
        assert statuses(on_every_worker(d.decrypt, d.web_pids)) == {(409, "key_disabled")}
        assert d.worker.probe(d.tenant, d.ciphertext) == {"ok": False, "code": "key_disabled"}
    finally:
        assert key_action(d.stack, d.tenant, l3_id, "enable").status == 200
    assert statuses(on_every_worker(d.decrypt, d.web_pids)) == {(200, None)}
    assert d.worker.probe(d.tenant, d.ciphertext) == {"ok": True}
