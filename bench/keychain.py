"""What the key chain costs, side by side in one run.

    python -m bench.keychain      # BENCH_ROUNDS (default 20), BENCH_SECONDS per side (1.5)

(a) HTTP, 2 gunicorn workers: generate-data-key + decrypt-data-key requests/s against
    GET /api/v1/me/ (same token, same tenant routing, same client), in interleaved rounds.
(b) In process: run_batch of 1,000 generate-data-key against a bare loop that makes a
    32-byte key and encrypts it with `cryptography`'s AESGCM (a fresh 96-bit nonce each).
(c) PKCS#11 calls per 10,000 single data-key operations after warm-up (provider.calls).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.common import (
    Deployment,
    HttpClient,
    LoadResult,
    Operation,
    crypto_operation,
    deployment,
    django_setup,
    django_teardown,
    make_data_keys,
    report,
    run_load,
    total,
)
from tests.e2e.tenantkit import CONTEXT

# Many short rounds: on a shared machine, load from elsewhere then hits both sides alike.
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "20"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "1.5"))
THREADS = 4  # two per gunicorn worker keeps both busy
BATCH = 1000
BATCH_REPEATS = 20
OPS_FOR_CALL_COUNT = 10_000


# --- (a) over HTTP ---------------------------------------------------------------------


def me_operation(client: HttpClient) -> Operation:
    return lambda: client.send("GET", "/api/v1/me/")[0]


def http_side_by_side(dep: Deployment) -> dict[str, list[LoadResult]]:
    """Per side ("crypto", "me"), one result per round."""
    ciphertexts = make_data_keys(dep.client(), 200)
    clients = [dep.client() for _ in range(THREADS)]
    sides: dict[str, list[Operation]] = {
        "crypto": [crypto_operation(c, ciphertexts) for c in clients],
        "me": [me_operation(c) for c in clients],
    }
    for operations in sides.values():  # warm-up: caches, connections, code paths
        run_load(operations, 1.0)
    rounds: dict[str, list[LoadResult]] = {name: [] for name in sides}
    for round_ in range(ROUNDS):
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for name in order:
            rounds[name].append(run_load(sides[name], SECONDS))
    return rounds


# --- (b) and (c) in process ------------------------------------------------------------


def timed(func: Callable[[], object]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def raw_aesgcm_loop() -> None:
    cipher = AESGCM(os.urandom(32))
    for _ in range(BATCH):
        cipher.encrypt(os.urandom(12), os.urandom(32), None)


def in_process(dep: Deployment) -> dict[str, float]:
    django_setup(dep.stack)
    from django_tenants.utils import tenant_context

    from apps.keychain import datakeys
    from apps.keystores.registry import platform_keystore
    from apps.tenants.models import Tenant
    from tests.helpers import KeystoreCalls

    tenant = Tenant.objects.get(schema_name=dep.tenant.schema)
    items: list[dict[str, object]] = [{"context": CONTEXT} for _ in range(BATCH)]
    try:
        with tenant_context(tenant):

            def batch() -> None:
                results = datakeys.run_batch(
                    service_key="payments", operation="generate-data-key", items=list(items)
                )
                assert all(r["ok"] for r in results), results[:1]

            batch()  # warm-up: loads the chain through the HSM once
            batch_s, raw_s = [], []
            for _ in range(BATCH_REPEATS):  # interleaved, so drift hits both alike
                batch_s.append(timed(batch))
                raw_s.append(timed(raw_aesgcm_loop))

            provider = platform_keystore()
            made = datakeys.run(
                service_key="payments", operation="generate-data-key", item={"context": CONTEXT}
            )
            with KeystoreCalls(provider) as counter:
                for _ in range(OPS_FOR_CALL_COUNT // 2):
                    datakeys.run(
                        service_key="payments",
                        operation="generate-data-key",
                        item={"context": CONTEXT},
                    )
                    datakeys.run(
                        service_key="payments",
                        operation="decrypt-data-key",
                        item={"ciphertext": made["ciphertext"], "context": CONTEXT},
                    )
            calls = counter.count
    finally:
        django_teardown()
    return {
        "batch_ms": statistics.median(batch_s) * 1000,
        "raw_ms": statistics.median(raw_s) * 1000,
        "pkcs11_calls_per_10k": calls * 10_000 / OPS_FOR_CALL_COUNT,
    }


def main() -> None:
    with deployment(web_workers=2) as dep:
        http = http_side_by_side(dep)
        local = in_process(dep)
    crypto, me = total(http["crypto"]), total(http["me"])
    round_ratios = [c.rate / m.rate for c, m in zip(http["crypto"], http["me"], strict=True)]
    http_ratio = crypto.rate / me.rate
    batch_ratio = local["raw_ms"] / local["batch_ms"]
    report(
        [
            f"HTTP, 2 gunicorn workers, {THREADS} client threads, {ROUNDS} interleaved rounds "
            f"x {SECONDS:g} s per side:",
            f"  generate+decrypt data key: {crypto.rate:7.1f} req/s ({crypto.requests} "
            f"requests, {crypto.errors} errors)",
            f"  GET /api/v1/me/:           {me.rate:7.1f} req/s ({me.requests} requests, "
            f"{me.errors} errors)",
            f"  http_ratio {http_ratio:.2f} (target >= 0.7); per round: median "
            f"{statistics.median(round_ratios):.2f}, range {min(round_ratios):.2f}"
            f"-{max(round_ratios):.2f}",
            f"In process, median of {BATCH_REPEATS}: run_batch of {BATCH} generate-data-key "
            f"{local['batch_ms']:.2f} ms; bare AESGCM loop of {BATCH} {local['raw_ms']:.2f} ms",
            f"  batch_ratio {batch_ratio:.2f} (target >= 0.3)",
            f"PKCS#11 calls per 10,000 data-key operations after warm-up: "
            f"{local['pkcs11_calls_per_10k']:g} (target 0)",
        ],
        {
            "bench": "keychain",
            "http_ratio": round(http_ratio, 3),
            "batch_ratio": round(batch_ratio, 3),
            "pkcs11_calls_per_10k": local["pkcs11_calls_per_10k"],
            "crypto_rps": round(crypto.rate, 1),
            "me_rps": round(me.rate, 1),
            "http_ratio_round_median": round(statistics.median(round_ratios), 3),
            "http_errors": crypto.errors + me.errors,
            "batch_1000_ms": round(local["batch_ms"], 3),
            "raw_1000_ms": round(local["raw_ms"], 3),
            "batch_items_per_s": round(BATCH / local["batch_ms"] * 1000),
            "raw_items_per_s": round(BATCH / local["raw_ms"] * 1000),
        },
    )


if __name__ == "__main__":
    main()
