"""The export folder's disk full: the export fails with `export_disk_full` (state and message
the user sees, no path, no partial file left), nothing else breaks (data keys, the audit
chain), and once there is space again an export succeeds without restarting anything.

The disk is real: a 32 KiB tmpfs mounted on KCM_AUDIT_EXPORT_DIR (needs root, as in CI; the
test is skipped, saying so, where mounting is not allowed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from bench.common import HttpClient

from .faultkit import small_tmpfs
from .stack import LiveStack
from .tenantkit import (
    CONTEXT,
    KEY_ADMIN,
    KEY_USER,
    Tenant,
    call,
    create_chain,
    provision_tenant,
    service_path,
)

pytestmark = pytest.mark.e2e

AUDITOR = "auditor"


def test_a_full_export_disk_fails_the_export_clearly_and_nothing_else() -> None:
    exports = Path(tempfile.mkdtemp(prefix="kcm-exports-"))
    try:
        try:
            mounted = small_tmpfs(exports, "32k")
            mounted.__enter__()
        except PermissionError as exc:
            pytest.skip(str(exc))
        try:
            env = {**os.environ, "KCM_AUDIT_EXPORT_DIR": str(exports)}
            with LiveStack(web_workers=2, celery_pool="solo", env=env) as stack:
                _run(stack, exports)
        finally:
            mounted.__exit__(None, None, None)
    finally:
        shutil.rmtree(exports, ignore_errors=True)


def _run(stack: LiveStack, exports: Path) -> None:
    tenant = provision_tenant(stack, "diskfull", (KEY_ADMIN, KEY_USER, AUDITOR))
    create_chain(stack, tenant)
    client = HttpClient(stack.port, tenant.host, tenant.tokens[KEY_USER])
    for _ in range(200):  # ~200 events: far more than 32 KiB as JSON Lines
        status, _, _ = client.send(
            "POST",
            f"{service_path()}/generate-data-key/",
            json.dumps({"context": CONTEXT}).encode(),
        )
        assert status == 200
    _wait_chained(stack, tenant, 200)

    started = time.monotonic()
    job = _export(stack, tenant, {"format": "jsonl"})
    print(f"\nfull disk: export {job['state']} after {time.monotonic() - started:.2f} s")
    assert job["state"] == "failed", job
    assert job["error_code"] == "export_disk_full", job
    assert "no space left" in job["error"].lower(), job
    assert str(exports) not in job["error"], job
    # No partial file left to keep the disk full.
    assert [p for p in exports.rglob("*") if p.is_file()] == []
    download = call(stack, tenant, AUDITOR, "GET", f"/api/v1/audit/exports/{job['id']}/download/")
    assert (download.status, download.code) == (409, "export_not_ready")

    # Nothing else broke: data keys, the audit chain, a small export, the worker.
    status, _, _ = client.send(
        "POST", f"{service_path()}/generate-data-key/", json.dumps({"context": CONTEXT}).encode()
    )
    assert status == 200
    verify = call(stack, tenant, AUDITOR, "GET", "/api/v1/audit/verify/")
    assert verify.status == 200 and verify.body["ok"], verify
    small = _export(stack, tenant, {"format": "jsonl", "action": "key.create"})
    assert small["state"] == "succeeded", small

    # Space again (the operator grows the disk): the same export succeeds, no restart.
    grown = subprocess.run(
        ["mount", "-o", "remount,size=8m", str(exports)], capture_output=True, text=True
    )
    assert grown.returncode == 0, grown.stderr
    freed = time.monotonic()
    again = _export(stack, tenant, {"format": "jsonl"})
    assert again["state"] == "succeeded", again
    assert again["total"] >= 200, again
    print(
        f"time to recover: export succeeded {time.monotonic() - freed:.2f} s after space was freed"
    )


def _export(stack: LiveStack, tenant: Tenant, body: dict[str, Any]) -> dict[str, Any]:
    """Request an export and wait for it to finish; the job as the API shows it."""
    created = call(stack, tenant, AUDITOR, "POST", "/api/v1/audit/exports/", body)
    assert created.status == 202, created
    deadline = time.monotonic() + 60
    while True:
        job = call(stack, tenant, AUDITOR, "GET", f"/api/v1/audit/exports/{created.body['id']}/")
        if job.body["state"] in ("succeeded", "failed"):
            return dict(job.body)
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def _wait_chained(stack: LiveStack, tenant: Tenant, at_least: int) -> None:
    """Until the sealer has chained at least `at_least` events (exports read the chain)."""
    deadline = time.monotonic() + 30
    while True:
        verify = call(stack, tenant, AUDITOR, "GET", "/api/v1/audit/verify/")
        if verify.body.get("checked", 0) >= at_least:
            return
        assert time.monotonic() < deadline, verify
        time.sleep(0.3)
