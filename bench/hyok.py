"""What holding your own key costs, side by side in one run: an L1 in the customer's KMIP key
manager (HYOK) against an L1 in the HSM.

    python -m bench.hyok      # BENCH_ROUNDS (default 6), BENCH_SECONDS per side (5),
                              # BENCH_COLD_LOADS per side (default 40)

Starts a throwaway deployment (2 gunicorn workers, SoftHSM2) and a `pykmip-server` on loopback
with a throwaway CA, then, in tenant "bench": L1 "root" (HSM) → L3 "payments", and L1 "held"
(a KMIP key, linked over the API) → L3 "held".

(a) Steady state over HTTP: generate-data-key + decrypt-data-key requests/s under each L3, in
    interleaved rounds; `hyok_vs_hsm` = HYOK rate / HSM rate (target >= 0.9).
(b) Cold loads in process, against the same database: the key cache emptied before each load
    of the service key (its L2 unwrapped through the HSM, or through the KMIP server over its
    kept TLS connection), interleaved; and the L1 unwrap alone. Plus one load through a fresh
    KMIP connection (TLS handshake included).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    HttpClient,
    LoadResult,
    Operation,
    crypto_operation,
    django_setup,
    django_teardown,
    make_data_keys,
    percentile,
    report,
    run_load,
    total,
)
from tests.e2e.stack import RATE_LIMITS_AWAY
from tests.e2e.tenantkit import (
    KEY_ADMIN,
    KEY_USER,
    Tenant,
    call,
    provision_tenant,
    stack_with_results,
)
from tests.keychain.kmip_server import KmipServer

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "6"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
COLD_LOADS = int(os.environ.get("BENCH_COLD_LOADS", "40"))
THREADS = 4  # two per gunicorn worker keeps both busy
SIDES = {"hsm": "payments", "hyok": "held"}  # side -> service key


def build_chains(stack: Any, tenant: Tenant, kmip: KmipServer) -> dict[str, str]:
    """Both chains over the API; returns the L1 ids by side."""

    def admin(path: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = call(stack, tenant, KEY_ADMIN, "POST", path, body)
        assert reply.status in (200, 201), reply
        return dict(reply.body)

    with kmip.admin() as customer:
        external = customer.create_aes_key()
    manager = admin(
        "/api/v1/key-managers/",
        {"name": "bench kms", "kind": "kmip", "settings": kmip.settings,
         "credentials": kmip.credentials},
    )  # fmt: skip
    l1s = {
        "hsm": admin("/api/v1/customer-keys/", {"name": "root"})["id"],
        "hyok": admin(
            "/api/v1/customer-keys/hyok/",
            {"name": "held", "key_manager_id": manager["id"], "external_key_id": external},
        )["id"],
    }
    for side, service in SIDES.items():
        admin("/api/v1/service-keys/", {"name": service, "customer_key_id": l1s[side]})
    return l1s


def http_side_by_side(stack: Any, tenant: Tenant) -> dict[str, list[LoadResult]]:
    def client() -> HttpClient:
        return HttpClient(stack.port, tenant.host, tenant.tokens[KEY_USER])

    operations: dict[str, list[Operation]] = {}
    for side, service in SIDES.items():
        made = make_data_keys(client(), 200, service)
        operations[side] = [crypto_operation(client(), made, service) for _ in range(THREADS)]
    for ops in operations.values():  # warm-up: caches, connections, code paths
        run_load(ops, 1.0)
    rounds: dict[str, list[LoadResult]] = {side: [] for side in SIDES}
    for round_ in range(ROUNDS):
        order = list(SIDES) if round_ % 2 == 0 else list(reversed(SIDES))
        for side in order:
            rounds[side].append(run_load(operations[side], SECONDS))
    return rounds


def timed_ms(func: Callable[[], object]) -> float:
    began = time.perf_counter()
    func()
    return (time.perf_counter() - began) * 1000


def cold_loads(stack: Any, tenant: Tenant) -> dict[str, Any]:
    """Milliseconds per cold service-key load and per L1 unwrap, by side."""
    django_setup(stack)
    from django_tenants.utils import tenant_context

    from apps.keychain.cache import key_cache
    from apps.keychain.chain import l2_unwrap, load_service_key
    from apps.keychain.models import TenantKeyVersion
    from apps.keystores.registry import forget_connections
    from apps.tenants.models import Tenant as TenantRow

    row = TenantRow.objects.get(schema_name=tenant.schema)
    loads: dict[str, list[float]] = {side: [] for side in SIDES}
    unwraps: dict[str, list[float]] = {side: [] for side in SIDES}
    try:
        with tenant_context(row):
            l2vs = {
                side: TenantKeyVersion.objects.select_related(
                    "parent__external_manager", "key"
                ).get(key__customer_key__name=name)
                for side, name in (("hsm", "root"), ("hyok", "held"))
            }
            forget_connections()
            key_cache().reset()
            first_hyok_ms = timed_ms(lambda: load_service_key("held"))  # TLS handshake included
            for service in SIDES.values():  # warm-up
                key_cache().reset()
                load_service_key(service)
            for index in range(COLD_LOADS):
                order = list(SIDES) if index % 2 == 0 else list(reversed(SIDES))
                for side in order:
                    service, l2v = SIDES[side], l2vs[side]
                    key_cache().reset()
                    loads[side].append(timed_ms(lambda: load_service_key(service)))  # noqa: B023
                    unwraps[side].append(timed_ms(lambda: l2_unwrap(l2v)))  # noqa: B023
    finally:
        django_teardown()
    return {"loads": loads, "unwraps": unwraps, "first_hyok_ms": first_hyok_ms}


def main() -> None:
    # The deployment may call a KMIP server on loopback (production allows none by default).
    os.environ["KCM_HYOK_KMIP_ALLOWED_HOSTS"] = "127.0.0.1"
    folder = Path(tempfile.mkdtemp(prefix="kcm-bench-hyok-"))
    try:
        with (
            KmipServer(folder / "kmip") as kmip,
            stack_with_results(RATE_LIMITS_AWAY, web_workers=2, celery_pool=None) as stack,
        ):
            tenant = provision_tenant(stack, "bench", (KEY_ADMIN, KEY_USER))
            build_chains(stack, tenant, kmip)
            http = http_side_by_side(stack, tenant)
            cold = cold_loads(stack, tenant)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    hsm, hyok = total(http["hsm"]), total(http["hyok"])
    ratio = hyok.rate / hsm.rate
    per_round = ", ".join(
        f"{y.rate / h.rate:.2f}" for y, h in zip(http["hyok"], http["hsm"], strict=True)
    )
    loads, unwraps = cold["loads"], cold["unwraps"]

    def ms(values: list[float]) -> str:
        return f"p50 {statistics.median(values):6.2f} ms, p95 {percentile(values, 95):6.2f} ms"

    report(
        [
            f"HTTP, 2 gunicorn workers, {THREADS} client threads, {ROUNDS} interleaved rounds "
            f"x {SECONDS:g} s per side, generate+decrypt data key:",
            f"  L1 in the HSM:         {hsm.rate:7.1f} req/s ({hsm.requests} requests, "
            f"{hsm.errors} errors: {dict(hsm.statuses)} {dict(hsm.failures)})",
            f"  L1 in KMIP (HYOK):     {hyok.rate:7.1f} req/s ({hyok.requests} requests, "
            f"{hyok.errors} errors: {dict(hyok.statuses)} {dict(hyok.failures)})",
            f"  hyok_vs_hsm {ratio:.2f} (target >= 0.9); per round: {per_round}",
            f"Cold service-key load (key cache empty: L2 + L3 unwrapped), {COLD_LOADS} each, "
            "interleaved:",
            f"  through the HSM:       {ms(loads['hsm'])}",
            f"  through KMIP:          {ms(loads['hyok'])}",
            "  L1 unwrap alone:       "
            f"HSM {statistics.median(unwraps['hsm']):.2f} ms, "
            f"KMIP {statistics.median(unwraps['hyok']):.2f} ms (p50)",
            f"  first KMIP load on a new connection (TLS handshake): {cold['first_hyok_ms']:.1f} ms",
        ],
        {
            "bench": "hyok",
            "hyok_vs_hsm": round(ratio, 3),
            "hsm_rps": round(hsm.rate, 1),
            "hyok_rps": round(hyok.rate, 1),
            "http_errors": hsm.errors + hyok.errors,
            "cold_load_hsm_p50_ms": round(statistics.median(loads["hsm"]), 3),
            "cold_load_hyok_p50_ms": round(statistics.median(loads["hyok"]), 3),
            "cold_load_hsm_p95_ms": round(percentile(loads["hsm"], 95), 3),
            "cold_load_hyok_p95_ms": round(percentile(loads["hyok"], 95), 3),
            "l1_unwrap_hsm_p50_ms": round(statistics.median(unwraps["hsm"]), 3),
            "l1_unwrap_hyok_p50_ms": round(statistics.median(unwraps["hyok"]), 3),
            "first_hyok_load_ms": round(cold["first_hyok_ms"], 3),
        },
    )


if __name__ == "__main__":
    main()
