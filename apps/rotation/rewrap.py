"""The rewrap engine: what a job's children are, and how one batch of them moves.

A job rotates one key (an L1 or an L2); its children are the stored versions one level below,
each wrapped by one of the key's versions. Moving a child means unwrapping it under its
current parent version and wrapping it under the job's target version, with associated data
that names the new parent (the same `chain` functions the rest of KCM unwraps with). A batch
is written with one UPDATE, inside the caller's transaction, together with the job's cursor.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
from django.db import connection
from django.db.models import Model

from apps.core.errors import KcmError
from apps.keychain import crypto
from apps.keychain.chain import (
    ensure_usable,
    l1_encrypt,
    l2_aad,
    l2_material,
    l2_unwrap,
    l3_aad_of,
    tenant,
)
from apps.keychain.errors import KeyDestroyed, KeyNotFound
from apps.keychain.models import (
    CustomerKey,
    CustomerKeyVersion,
    ServiceKeyVersion,
    TenantKey,
    TenantKeyVersion,
    VersionState,
)
from apps.rotation.models import RewrapJob, RewrapLevel
from apps.tenants.access import current_tenant

# A child that cannot be unwrapped is skipped and reported; these say it is the child's fault
# (altered, or its parent's material is gone), not a passing outage.
CHILD_FAILURES: tuple[type[KcmError], ...] = (crypto.CiphertextInvalid, KeyDestroyed)
MAX_REPORTED_FAILURES = 100


@dataclass
class BatchResult:
    last_pk: int
    # (child pk, the parent it was unwrapped under, its new wrapped form)
    moved: list[tuple[int, int, bytes]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    by_parent: Counter[int] = field(default_factory=Counter)  # parent version -> children


class Children:
    """The children of one rotated key, seen from one job."""

    child_model: type[Model]

    def __init__(self, job: RewrapJob) -> None:
        self.job = job
        self.versions = self._load_versions()  # pk -> the key's version
        self.by_number = {v.version: v for v in self.versions.values()}
        self.target = (
            self.by_number.get(job.target_version) if job.target_version is not None else None
        )
        if job.target_version is not None and self.target is None:
            raise KeyNotFound(f"Version {job.target_version} of the rotated key is gone.")

    # --- what each level defines ------------------------------------------------------------

    def _load_versions(self) -> dict[int, Any]:
        raise NotImplementedError

    def ensure_usable(self) -> None:
        """Raise if the chain above the children cannot be used (disabled, destroyed, ...)."""
        raise NotImplementedError

    def reload_keys(self) -> None:
        """Read the rotated key (and the key above it) again, for their current states."""
        raise NotImplementedError

    def _rows(self, window: Any) -> list[Any]:
        """The pending children in `window` (a queryset), in pk order."""
        raise NotImplementedError

    def _move(self, rows: list[Any], result: BatchResult, *, write: bool) -> None:
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------

    def _under(self, versions: list[int]) -> Any:
        """Children with material whose parent is one of `versions` (pks). A child's parent is
        always a version of its own parent key, so no join is needed (nor wanted: right after
        a big rewrap the planner's row estimates are stale, and a join could go quadratic)."""
        return self.child_model.objects.filter(parent_id__in=versions).exclude(  # type: ignore[attr-defined]
            state=VersionState.DESTROYED
        )

    def _scope(self) -> Any:
        """Every child of the key that still has material."""
        return self._under(list(self.versions))

    def pending(self) -> Any:
        """Children not yet under the target version (all of them for a dry run)."""
        target = getattr(self.target, "pk", None)
        return self._under([pk for pk in self.versions if pk != target])

    def count_pending(self) -> int:
        return int(self.pending().count())

    def run_batch(self, *, after: int, limit: int) -> BatchResult | None:
        """Move (or, in a dry run, only check) the pending children among the next `limit`
        rows of the children's table after pk `after`; None once the table is exhausted.

        Windows of the whole table, not "the next `limit` pending children": each query then
        reads a bounded key range whatever the planner believes about the table, which right
        after a big rewrap it believes wrongly. Rows are not locked: the write moves a child
        only if it is still where it was read (same parent, not destroyed), so a key shredded
        meanwhile stays shredded, and data-key requests reserving usage on these rows never
        wait for a batch."""
        table = self.child_model.objects.filter(pk__gt=after).order_by("pk")  # type: ignore[attr-defined]
        ids = list(table.values_list("pk", flat=True)[:limit])
        if not ids:
            return None
        rows = self._rows(self.pending().filter(pk__gt=after, pk__lte=ids[-1]).order_by("pk"))
        result = BatchResult(last_pk=ids[-1])
        self._move(rows, result, write=not self.job.dry_run)
        if result.moved:
            _write(self.child_model, result.moved, self.target.pk)  # type: ignore[union-attr]
        return result

    def referenced(self, version: Any) -> bool:
        return bool(self._under([version.pk]).exists())

    def retirable(self) -> list[Any]:
        """Enabled versions, other than the target, that no child with material references."""
        return [
            version
            for version in sorted(self.versions.values(), key=lambda v: v.version)
            if version.state == VersionState.ENABLED
            and version.pk != getattr(self.target, "pk", None)
            and not self.referenced(version)
        ]

    def census(self, *, pending_only: bool = False) -> dict[int, int]:
        """Children with material (or only those not yet moved) per parent version number."""
        rows = self.pending() if pending_only else self._scope()
        counts = Counter(rows.values_list("parent_id", flat=True))
        return {self.versions[pk].version: n for pk, n in sorted(counts.items())}

    @staticmethod
    def _fail(result: BatchResult, child: tuple[int, Any, int], parent: int, exc: KcmError) -> None:
        """Note a child that did not unwrap: (pk, key id, version), its parent version."""
        failure: dict[str, Any] = {"code": exc.code, "parent": parent}
        if len(result.failures) < MAX_REPORTED_FAILURES:
            pk, key_id, version = child
            failure.update(child=pk, key=str(key_id), version=version)
        result.failures.append(failure)


class L3Children(Children):
    """An L2's children: the service-key (L3) versions below it."""

    child_model = ServiceKeyVersion

    def _load_versions(self) -> dict[int, Any]:
        key = TenantKey.objects.select_related("customer_key").filter(pk=self.job.key_id).first()
        if key is None:
            raise KeyNotFound("The rotated tenant key is gone.")
        self.l2 = key
        rows = TenantKeyVersion.objects.filter(key=key).select_related("key", "parent")
        return {v.pk: v for v in rows}

    def ensure_usable(self) -> None:
        ensure_usable(self.l2.customer_key, "customer key")
        ensure_usable(self.l2, "tenant key")

    def reload_keys(self) -> None:
        self.l2 = TenantKey.objects.select_related("customer_key").get(pk=self.l2.pk)

    def _rows(self, window: Any) -> list[Any]:
        # Plain tuples: building a model object per row would cost more than its crypto.
        return list(window.values_list("pk", "key_id", "version", "parent_id", "wrapped"))

    def _move(self, rows: list[Any], result: BatchResult, *, write: bool) -> None:
        target = self.target
        new_cipher = l2_material(target) if write and target is not None else None
        # Strings made once per batch, not per row: the associated data is most of the cost.
        tenant_uid = str(tenant().uid)
        used = {row[3] for row in rows}
        parents = {
            pk: (l2_material(v), str(v.key_id), v.version)
            for pk, v in self.versions.items()
            if pk in used
        }
        target_key = str(target.key_id) if target is not None else ""
        for pk, key_id, version, parent_id, wrapped in rows:
            cipher, parent_key, parent_version = parents[parent_id]
            result.by_parent[parent_version] += 1
            key = str(key_id)
            try:
                raw = crypto.unseal(
                    cipher,
                    bytes(wrapped),
                    l3_aad_of(
                        tenant_uid=tenant_uid,
                        key_id=key,
                        version=version,
                        parent_key_id=parent_key,
                        parent_version=parent_version,
                    ),
                )
            except CHILD_FAILURES as exc:
                self._fail(result, (pk, key_id, version), parent_version, exc)
                continue
            if new_cipher is None or target is None:
                continue
            new_aad = l3_aad_of(
                tenant_uid=tenant_uid,
                key_id=key,
                version=version,
                parent_key_id=target_key,
                parent_version=target.version,
            )
            result.moved.append((pk, parent_id, crypto.seal(new_cipher, raw, new_aad)))


class L2Children(Children):
    """An L1's children: the versions of its tenant key (L2)."""

    child_model = TenantKeyVersion

    def _load_versions(self) -> dict[int, Any]:
        key = CustomerKey.objects.filter(pk=self.job.key_id).first()
        if key is None:
            raise KeyNotFound("The rotated customer key is gone.")
        self.l1 = key
        return {v.pk: v for v in CustomerKeyVersion.objects.filter(key=key)}

    def ensure_usable(self) -> None:
        ensure_usable(self.l1, "customer key")

    def reload_keys(self) -> None:
        self.l1 = CustomerKey.objects.get(pk=self.l1.pk)

    def _rows(self, window: Any) -> list[Any]:
        return list(window.select_related("key", "parent"))

    def _move(self, rows: list[Any], result: BatchResult, *, write: bool) -> None:
        target = self.target
        for row in rows:
            result.by_parent[row.parent.version] += 1
            try:
                raw = l2_unwrap(row)
            except CHILD_FAILURES as exc:
                self._fail(result, (row.pk, row.key_id, row.version), row.parent.version, exc)
                continue
            if not write or target is None:
                continue
            old_parent = row.parent_id
            row.parent = target  # the associated data names the new parent
            wrapped = l1_encrypt(target, raw, l2_aad(row, row.key))
            result.moved.append((row.pk, old_parent, wrapped))


def children_of(job: RewrapJob) -> Children:
    return L2Children(job) if job.level == RewrapLevel.L1 else L3Children(job)


def _write(model: type[Model], moved: list[tuple[int, int, bytes]], parent_pk: int) -> None:
    """One UPDATE for the whole batch: new ciphertexts and the new parent reference, for each
    child still under the parent it was unwrapped with and not destroyed (rechecked on the
    latest row version if another transaction changed it). Sent on the underlying psycopg
    connection (the same session and transaction) with binary parameters: Django's cursor
    binds client-side, as text, escaping every ciphertext."""
    table = ".".join(
        connection.ops.quote_name(name)
        for name in (current_tenant().schema_name, model._meta.db_table)
    )
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:  # not Django's ClientCursor
        cursor.execute(
            f"UPDATE {table} AS child SET wrapped = moved.wrapped, parent_id = %b"  # noqa: S608
            " FROM unnest(%b::bigint[], %b::bigint[], %b::bytea[]) AS moved(id, parent, wrapped)"
            " WHERE child.id = moved.id AND child.parent_id = moved.parent"
            " AND child.state <> 'DESTROYED'"
            # The batch's key range: lets the planner read just these rows by primary key
            # instead of scanning the whole table (which would make a job quadratic).
            " AND child.id BETWEEN %b AND %b",
            [
                parent_pk,
                [pk for pk, _, _ in moved],
                [parent for _, parent, _ in moved],
                [wrapped for _, _, wrapped in moved],
                min(pk for pk, _, _ in moved),
                max(pk for pk, _, _ in moved),
            ],
        )
