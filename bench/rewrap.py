"""Rewrap jobs and the rotation sweep, measured side by side in one run.

    python -m bench.rewrap      # BENCH_REWRAP_KEYS (50000), BENCH_SWEEP_TENANTS (1000)

1. Rewrap rate. A tenant with BENCH_REWRAP_KEYS service keys under one L2. A solo Celery
   worker (one process) runs the job that rotating the L2 queues, at the default batch size:
   its rate is children moved per second from the job's start to its end (reads, writes,
   commits, job bookkeeping). Beside it, the raw loop in one process: rotate the L2 again,
   read every service key in one query, unwrap and wrap each under the new version with the
   same chain functions, write all back with one UPDATE and commit once: the same work with
   its database I/O, but no batches, no cursor, no crash safety. `rewrap_ratio` = job rate /
   raw rate (target >= 0.3). For scale it also prints the crypto alone (the same unwrap and
   wrap over blobs already in memory, no database): no design that stores each key in
   PostgreSQL comes near that figure, the raw loop included.
2. Sweep. BENCH_SWEEP_TENANTS active tenants, each with a key chain (L1 in SoftHSM, L2, three
   L3s) and default policies, none due. After a warm-up, one full look into every tenant's
   keys (what each tenant gets when a key falls due, and at least every
   KCM_ROTATION_CHECK_SECONDS), the beat sweep as it runs every minute in between (median of
   5), and the full look again with the same queries sent tenant by tenant.

Builds its own deployment (LiveStack: scratch database, gunicorn, worker) with a private SoftHSM2
token. Prints figures, then one JSON line.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import report, start_celery_worker
from tests.e2e.rotationkit import in_stack, private_softhsm
from tests.e2e.stack import LiveStack
from tests.e2e.tenantkit import KEY_ADMIN, call, create_chain, provision_tenant

KEYS = int(os.environ.get("BENCH_REWRAP_KEYS", "50000"))
TENANTS = int(os.environ.get("BENCH_SWEEP_TENANTS", "1000"))
TARGET_RATIO = 0.3
SWEEP_ROUNDS = 5


# --- run inside the stack's Django (through in_stack) ------------------------------------------


def crypto_rate(min_seconds: float = 3.0) -> dict[str, Any]:
    """Unwrap every service key of the tenant under its L2 version and wrap it under another
    key, in memory, as fast as one process can: the ceiling a rewrap job is compared with.
    Everything that is not the per-key work (strings, ciphers) is prepared before the clock."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from apps.keychain import crypto
    from apps.keychain.chain import l2_material, l3_aad_of, tenant
    from apps.keychain.models import ServiceKeyVersion, TenantKeyVersion

    tenant_uid = str(tenant().uid)
    parents = {
        v.pk: (l2_material(v), str(v.key_id), v.version)
        for v in TenantKeyVersion.objects.select_related("key", "parent")
    }
    rows = [
        (str(key_id), version, *parents[parent], bytes(blob))
        for key_id, version, parent, blob in ServiceKeyVersion.objects.values_list(
            "key_id", "version", "parent_id", "wrapped"
        )
    ]
    target = AESGCM(crypto.new_key())
    done, began = 0, time.perf_counter()
    while True:
        for key, version, cipher, parent_key, parent_version, blob in rows:
            raw = crypto.unseal(
                cipher,
                blob,
                l3_aad_of(
                    tenant_uid=tenant_uid,
                    key_id=key,
                    version=version,
                    parent_key_id=parent_key,
                    parent_version=parent_version,
                ),
            )
            crypto.seal(
                target,
                raw,
                l3_aad_of(
                    tenant_uid=tenant_uid,
                    key_id=key,
                    version=version,
                    parent_key_id=parent_key,
                    parent_version=parent_version + 1,
                ),
            )
        done += len(rows)
        elapsed = time.perf_counter() - began
        if elapsed >= min_seconds:
            return {"keys": done, "seconds": elapsed, "rate": done / elapsed}


def raw_db_rate() -> dict[str, Any]:
    """The raw loop with its database I/O, in one process: rotate the L2 (untimed), then read
    every service key in one query, unwrap and wrap each under the new version, write them all
    back with one UPDATE and commit once. No batches, no cursor, no job: what a throwaway
    script would do, and what the job's crash safety is measured against."""
    import psycopg
    from django.db import connection, transaction

    from apps.keychain import crypto
    from apps.keychain import services as keychain_services
    from apps.keychain.chain import l2_material, l3_aad_of, tenant
    from apps.keychain.models import ServiceKeyVersion, TenantKey, TenantKeyVersion

    l2 = keychain_services.key_rotate(key_id=TenantKey.objects.get().pk)
    versions = {v.version: v for v in TenantKeyVersion.objects.select_related("key", "parent")}
    new = versions[l2.primary_version]
    old = versions[l2.primary_version - 1]
    began = time.perf_counter()
    with transaction.atomic():
        tenant_uid, new_cipher, old_cipher = str(tenant().uid), l2_material(new), l2_material(old)
        ids, blobs = [], []
        for pk, key_id, version, blob in ServiceKeyVersion.objects.filter(
            parent_id=old.pk
        ).values_list("pk", "key_id", "version", "wrapped"):
            key = str(key_id)
            raw = crypto.unseal(
                old_cipher,
                bytes(blob),
                l3_aad_of(
                    tenant_uid=tenant_uid,
                    key_id=key,
                    version=version,
                    parent_key_id=str(old.key_id),
                    parent_version=old.version,
                ),
            )
            ids.append(pk)
            blobs.append(
                crypto.seal(
                    new_cipher,
                    raw,
                    l3_aad_of(
                        tenant_uid=tenant_uid,
                        key_id=key,
                        version=version,
                        parent_key_id=str(new.key_id),
                        parent_version=new.version,
                    ),
                )
            )
        table = f'"{tenant().schema_name}".keychain_servicekeyversion'
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(
                f"UPDATE {table} AS v SET wrapped = m.wrapped, parent_id = %b"
                " FROM unnest(%b::bigint[], %b::bytea[]) AS m(id, wrapped) WHERE v.id = m.id",
                [new.pk, ids, blobs],
            )
    elapsed = time.perf_counter() - began
    return {"keys": len(ids), "seconds": elapsed, "rate": len(ids) / elapsed}


def populate_quiet(slugs: list[str]) -> int:
    """Tenants with a key chain each (L1 in the HSM, L2, three L3s) and a default policy per
    level that none of their keys is near."""
    from django_tenants.utils import tenant_context

    from apps.keychain.services import customer_key_create, service_key_create
    from apps.rotation.policies import rotation_default_set
    from apps.tenants.services import tenant_create

    for slug in slugs:
        with tenant_context(tenant_create(slug=slug, name=slug)):
            customer_key_create(name="root")
            for name in ("payments", "ledger", "search"):
                service_key_create(name=name)
            for level in ("L1", "L2"):
                rotation_default_set(level=level, period_days=365)
            rotation_default_set(level="L3", period_days=90, max_usage=1_000_000)
    return len(slugs)


def sweep_timing(rounds: int) -> dict[str, Any]:
    """The beat sweep's wall time: one full look into every tenant (what each tenant gets at
    least every KCM_ROTATION_CHECK_SECONDS, and whenever a key falls due), then `rounds`
    sweeps as they run every minute in between; and the full look again with the same
    queries sent one tenant at a time."""
    from apps.rotation import selectors, sweep
    from apps.tenants.selectors import tenants_for_upkeep

    sweep.rotation_sweep(check_all=True)  # warm-up: this process's first touch of each schema
    began = time.perf_counter()
    full = sweep.rotation_sweep(check_all=True)
    full_seconds = time.perf_counter() - began
    assert full.due == 0 and not full.rotated, full
    seconds = []
    for _ in range(rounds):
        began = time.perf_counter()
        result = sweep.rotation_sweep()
        seconds.append(time.perf_counter() - began)
        assert result.due == 0 and not result.rotated, result
    schemas = [tenant.schema_name for tenant in tenants_for_upkeep()]
    began = time.perf_counter()
    for schema in schemas:
        selectors.due_scan(schemas=[schema])
        selectors.active_jobs(schemas=[schema])
    return {
        "tenants": full.tenants,
        "checked": result.checked,
        "due": full.due,
        "full_seconds": full_seconds,
        "seconds": seconds,
        "naive_seconds": time.perf_counter() - began,
    }


# --- the bench ----------------------------------------------------------------------------------


def _moment(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def measure_rewrap(stack: LiveStack) -> dict[str, Any]:
    tenant = provision_tenant(stack, "bench", (KEY_ADMIN,))
    create_chain(stack, tenant)
    in_stack(stack, tenant.schema, "bulk_service_keys", KEYS - 1)
    l2_id = call(stack, tenant, KEY_ADMIN, "GET", "/api/v1/keys/").body["results"][0]["tenant_key"][
        "id"
    ]
    start_celery_worker(stack, "kms_project")
    started = call(stack, tenant, KEY_ADMIN, "POST", f"/api/v1/rotation/keys/{l2_id}/rotate/", {})
    assert started.status == 202, started
    job_path = f"/api/v1/rotation/jobs/{started.body['job']['id']}/"
    while True:
        job = call(stack, tenant, KEY_ADMIN, "GET", job_path).body
        if job["state"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert (job["state"], job["done"], job["failed"]) == ("succeeded", KEYS, 0), job
    seconds = _moment(job["finished_at"]) - _moment(job["started_at"])
    crypto_only = in_stack(stack, tenant.schema, "bench.rewrap:crypto_rate")
    raw = in_stack(stack, tenant.schema, "bench.rewrap:raw_db_rate")
    assert raw["keys"] == KEYS, raw
    return {
        "job_seconds": seconds,
        "job_rate": KEYS / seconds,
        "raw_rate": raw["rate"],
        "raw_seconds": raw["seconds"],
        "crypto_rate": crypto_only["rate"],
        "batch_size": int(stack.env.get("KCM_REWRAP_BATCH_SIZE", "1000")),
    }


def measure_sweep(stack: LiveStack) -> dict[str, Any]:
    slugs = [f"quiet-{index:04d}" for index in range(TENANTS - 1)]  # "bench" is the last one
    began = time.monotonic()
    halves = [slugs[0::2], slugs[1::2]]
    threads = [
        threading.Thread(target=in_stack, args=(stack, None, "bench.rewrap:populate_quiet", half))
        for half in halves
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    populated = time.monotonic() - began
    timing = in_stack(stack, None, "bench.rewrap:sweep_timing", SWEEP_ROUNDS)
    assert timing["tenants"] == TENANTS and timing["due"] == 0, timing
    return {**timing, "populate_seconds": populated}


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="kcm-bench-rewrap-"))
    try:
        env = {**os.environ, **private_softhsm(folder / "hsm"), "KCM_LOG_LEVEL": "WARNING"}
        with LiveStack(web_workers=1, celery_pool=None, env=env) as stack:
            rewrap = measure_rewrap(stack)
            sweep = measure_sweep(stack)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ratio = rewrap["job_rate"] / rewrap["raw_rate"]
    median = statistics.median(sweep["seconds"])
    report(
        [
            f"rewrap: {KEYS} service keys under one L2, batches of {rewrap['batch_size']}",
            f"  rewrap job (solo worker; batches, cursor, commits): {rewrap['job_rate']:,.0f} "
            f"keys/s ({rewrap['job_seconds']:.2f} s)",
            f"  raw loop, one process, one read + one write + one commit: "
            f"{rewrap['raw_rate']:,.0f} keys/s ({rewrap['raw_seconds']:.2f} s)",
            f"  rewrap_ratio = {ratio:.2f} (target >= {TARGET_RATIO})",
            f"  for scale, the crypto alone in memory: {rewrap['crypto_rate']:,.0f} keys/s "
            f"(job / crypto = {rewrap['job_rate'] / rewrap['crypto_rate']:.2f})",
            f"sweep: {sweep['tenants']} active tenants, nothing due "
            f"(populated in {sweep['populate_seconds']:.0f} s)",
            f"  beat sweep, every minute: median {median * 1000:.0f} ms, "
            f"min {min(sweep['seconds']) * 1000:.0f} ms over {SWEEP_ROUNDS} runs "
            f"({sweep['checked']} tenants' keys looked into)",
            f"  a full look into every tenant's keys (each gets one at least hourly): "
            f"{sweep['full_seconds'] * 1000:.0f} ms",
            f"  the same full look, tenant by tenant: {sweep['naive_seconds'] * 1000:.0f} ms",
        ],
        {
            "bench": "rewrap",
            "service_keys": KEYS,
            "batch_size": rewrap["batch_size"],
            "job_keys_per_s": round(rewrap["job_rate"], 1),
            "raw_keys_per_s": round(rewrap["raw_rate"], 1),
            "rewrap_ratio": round(ratio, 3),
            "rewrap_ratio_target": TARGET_RATIO,
            "crypto_only_keys_per_s": round(rewrap["crypto_rate"], 1),
            "rewrap_ratio_vs_crypto_only": round(rewrap["job_rate"] / rewrap["crypto_rate"], 3),
            "sweep_tenants": sweep["tenants"],
            "sweep_due": sweep["due"],
            "sweep_seconds_median": round(median, 4),
            "sweep_seconds_min": round(min(sweep["seconds"]), 4),
            "sweep_full_check_seconds": round(sweep["full_seconds"], 4),
            "sweep_full_check_tenant_by_tenant_seconds": round(sweep["naive_seconds"], 4),
        },
    )


if __name__ == "__main__":
    main()
