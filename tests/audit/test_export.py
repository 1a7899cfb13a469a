"""Exports: filtered, streamed to a file with progress, with a signed manifest that the
offline script verifies — and that it rejects after a one-byte change."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django_tenants.utils import tenant_context

from apps.audit import export, services
from apps.audit.models import AuditEvent
from apps.core.roles import Role
from apps.tenants.models import Tenant
from tests.helpers import assert_problem

REPO = Path(__file__).resolve().parents[2]
VERIFY = [sys.executable, str(REPO / "tools" / "audit_verify.py")]


@pytest.fixture
def exported(world: Any, tmp_path: Path, settings: Any) -> Any:
    """Run an export of acme's log synchronously; return (file, manifest path, public key)."""
    settings.KCM_AUDIT_EXPORT_DIR = tmp_path

    def run(format: str, **filters: str) -> tuple[Path, Path, Path]:
        with tenant_context(Tenant.objects.get(slug="acme")):
            for number in range(25):
                services.audit_record(
                    action="test.alpha" if number % 2 else "test.beta",
                    target=f"k{number}",
                    details={"n": number, "note": 'héllo, "quoted"\nline'},
                )
            services.checkpoint_create()
            job = export.export_request(filters=filters, format=format, requested_by="user:test")
            job = export.export_run(export_id=str(job.pk))
            path = export.export_dir() / job.file_name
        manifest = tmp_path / "manifest.json"
        manifest.write_text(json.dumps(job.manifest))
        key = tmp_path / "audit-key.pem"
        key.write_text(job.manifest["public_key_pem"])
        return path, manifest, key

    return run


@pytest.mark.parametrize("format", ["jsonl", "csv"])
def test_the_offline_script_verifies_an_export_and_rejects_a_one_byte_change(
    exported: Any, format: str
) -> None:
    path, manifest, key = exported(format)
    ok = subprocess.run(
        [*VERIFY, str(path), str(manifest), "--public-key", str(key)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK" in ok.stdout
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    bad = subprocess.run(
        [*VERIFY, str(path), str(manifest), "--public-key", str(key)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "INVALID" in bad.stdout


def test_a_doctored_manifest_is_rejected(exported: Any) -> None:
    path, manifest, key = exported("jsonl")
    body = json.loads(manifest.read_text())
    body["count"] -= 1
    manifest.write_text(json.dumps(body))
    result = subprocess.run(
        [*VERIFY, str(path), str(manifest), "--public-key", str(key)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "manifest signature" in result.stdout


def test_a_filtered_export_holds_only_matching_events_and_still_verifies(exported: Any) -> None:
    path, manifest, key = exported("jsonl", action="test.alpha")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines and {line["action"] for line in lines} == {"test.alpha"}
    assert (
        subprocess.run([*VERIFY, str(path), str(manifest), "--public-key", str(key)]).returncode
        == 0
    )


def test_exporting_is_audited(exported: Any) -> None:
    exported("jsonl")
    with tenant_context(Tenant.objects.get(slug="acme")):
        assert AuditEvent.objects.filter(action="audit.export").count() == 1


def test_auditors_search_and_start_exports_but_cannot_change_anything(api: Any) -> None:
    auditor = api("acme", Role.AUDITOR)
    assert auditor.get("/api/v1/audit/events/?action=auth&outcome=denied").status_code == 200
    assert auditor.get("/api/v1/audit/verify/").json_body["ok"] is True
    started = auditor.post("/api/v1/audit/exports/", {"format": "csv", "action": "key."})
    assert started.status_code == 202 and started.json_body["state"] == "queued"
    for method in ("PUT", "PATCH", "DELETE"):
        assert auditor.call(method, "/api/v1/audit/events/").status_code == 405
    assert_problem(auditor.post("/api/v1/customer-keys/", {"name": "x"}), 403, "role_not_allowed")


def test_search_filters_are_checked(api: Any) -> None:
    auditor = api("acme", Role.AUDITOR)
    assert_problem(auditor.get("/api/v1/audit/events/?since=yesterday"), 400, "invalid_filter")
    assert_problem(auditor.get("/api/v1/audit/events/?outcome=maybe"), 400, "invalid_filter")
    assert_problem(
        auditor.post("/api/v1/audit/exports/", {"format": "xml"}), 400, "validation_error"
    )
