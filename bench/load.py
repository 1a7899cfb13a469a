"""Sustained load: 8 client threads against 2 gunicorn workers, a mix of generate-data-key,
decrypt-data-key, encrypt and decrypt. Reports errors (should be none), whether a worker died
or was replaced, and each worker's memory at start, middle and end (should stay flat).

    python -m bench.load        # BENCH_LOAD_SECONDS (default 60)
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
import time

from bench.common import (
    SERVICE,
    Deployment,
    HttpClient,
    Operation,
    deployment,
    make_data_keys,
    payload_b64,
    report,
    rss_mb,
    run_load,
)
from tests.e2e.tenantkit import CONTEXT, web_worker_pids

SECONDS = float(os.environ.get("BENCH_LOAD_SECONDS", "60"))
WARM_UP_SECONDS = min(5.0, SECONDS / 6)
THREADS = 8


def encrypted_payloads(client: HttpClient, count: int) -> list[str]:
    status, _, body = client.post_json(
        f"{SERVICE}/encrypt/batch/",
        {"items": [{"plaintext": payload_b64(), "context": CONTEXT}] * count},
    )
    assert status == 200, body
    return [item["ciphertext"] for item in body["results"]]


def mixed_operation(
    client: HttpClient, keys: list[str], payloads: list[str], seen: set[int]
) -> Operation:
    """generate-data-key, decrypt-data-key, encrypt, decrypt, round and round; notes each
    serving PID in `seen`."""
    body = json.dumps
    requests = itertools.cycle(
        [
            ("generate-data-key", itertools.repeat(body({"context": CONTEXT}).encode())),
            (
                "decrypt-data-key",
                itertools.cycle(
                    [body({"ciphertext": c, "context": CONTEXT}).encode() for c in keys]
                ),
            ),
            (
                "encrypt",
                itertools.repeat(body({"plaintext": payload_b64(), "context": CONTEXT}).encode()),
            ),
            (
                "decrypt",
                itertools.cycle(
                    [body({"ciphertext": c, "context": CONTEXT}).encode() for c in payloads]
                ),
            ),
        ]
    )

    def operation() -> int:
        name, bodies = next(requests)
        status, pid, _ = client.send("POST", f"{SERVICE}/{name}/", next(bodies))
        seen.add(pid)
        return status

    return operation


def memory(pids: set[int]) -> dict[int, float]:
    found = {}
    for pid in sorted(pids):
        with contextlib.suppress(OSError, ValueError):  # gone: counted as a restart
            found[pid] = rss_mb(pid)
    return found


def main() -> None:
    with deployment(web_workers=2) as dep:
        lines, figures = run(dep)
    report(lines, figures)


def run(dep: Deployment) -> tuple[list[str], dict[str, object]]:
    setup = dep.client()
    keys, payloads = make_data_keys(setup, 100), encrypted_payloads(setup, 100)
    seen: set[int] = set()
    operations = [mixed_operation(dep.client(), keys, payloads, seen) for _ in range(THREADS)]
    run_load(operations, WARM_UP_SECONDS)
    start_pids = web_worker_pids(dep.stack)
    seen.clear()
    rss = {"start": memory(start_pids)}
    pid_samples: list[set[int]] = []
    stop = threading.Event()

    def sample() -> None:
        middle = time.monotonic() + SECONDS / 2
        while not stop.wait(1.0):
            pid_samples.append(web_worker_pids(dep.stack))
            if "middle" not in rss and time.monotonic() >= middle:
                rss["middle"] = memory(start_pids)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = run_load(operations, SECONDS)
    stop.set()
    sampler.join()
    end_pids = web_worker_pids(dep.stack)
    rss["end"] = memory(start_pids)
    rss.setdefault("middle", rss["end"])
    every_pid = set().union(end_pids, seen, *pid_samples)
    restarts = len(every_pid - start_pids)

    start_mb, end_mb = sum(rss["start"].values()), sum(rss["end"].values())
    growth = (end_mb - start_mb) / start_mb * 100
    per_worker = "; ".join(
        f"{pid}: "
        + " / ".join(f"{rss[when].get(pid, 0):.1f}" for when in ("start", "middle", "end"))
        for pid in sorted(start_pids)
    )
    lines = [
        f"load: {THREADS} threads for {result.seconds:.0f} s against 2 gunicorn workers "
        "(generate / decrypt data key, encrypt / decrypt payload)",
        f"  {result.requests} requests, {result.rate:.1f} req/s, {result.errors} errors"
        + (
            f" (statuses {dict(result.statuses)}, exceptions {dict(result.failures)})"
            if result.errors
            else ""
        ),
        f"  worker PIDs at start {sorted(start_pids)}, at end {sorted(end_pids)}; "
        f"restarts {restarts}",
        f"  RSS MiB (start / middle / end): {per_worker}",
        f"  total {start_mb:.1f} -> {end_mb:.1f} MiB ({growth:+.1f}%)",
    ]
    data: dict[str, object] = {
        "bench": "load",
        "requests": result.requests,
        "errors": result.errors,
        "worker_restarts": restarts,
        "rss_start_mb": round(start_mb, 1),
        "rss_end_mb": round(end_mb, 1),
        "rss_growth_pct": round(growth, 2),
        "rps": round(result.rate, 1),
        "seconds": round(result.seconds, 1),
    }
    return lines, data


if __name__ == "__main__":
    main()
