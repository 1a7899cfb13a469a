"""Reads of the key chain, shared by console and API."""

from __future__ import annotations

from typing import Any

from apps.keychain.models import (
    CustomerKey,
    KeyBase,
    KeyState,
    ServiceKey,
    ServiceKeyVersion,
    TenantKeyVersion,
)


def _versions(key: KeyBase, rows: Any) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        item: dict[str, Any] = {
            "version": row.version,
            "state": row.state,
            "primary": row.version == key.primary_version,
            "created_at": row.created_at,
        }
        if hasattr(row, "parent_id"):
            item["parent_version"] = row.parent.version
        if isinstance(row, ServiceKeyVersion):
            item["usage_reserved"] = row.usage_reserved
        out.append(item)
    return out


def _key(key: KeyBase, level: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(key.pk),
        "level": level,
        "state": key.state,
        "state_reason": key.state_reason,
        "primary_version": key.primary_version,
        "deletion_date": key.deletion_date,
        "destroyed_at": key.destroyed_at,
        "created_at": key.created_at,
        **extra,
    }


def service_key_detail(l3: ServiceKey) -> dict[str, Any]:
    versions = l3.versions.select_related("parent").order_by("version")
    return _key(
        l3,
        "L3",
        name=l3.name,
        description=l3.description,
        tenant_key_id=str(l3.tenant_key_id),
        versions=_versions(l3, versions),
    )


def chain_tree() -> list[dict[str, Any]]:
    """Every L1 with its L2 and the L3s below it, with versions and states: four queries."""
    l1s = list(
        CustomerKey.objects.select_related("tenant_key")
        .prefetch_related("versions")
        .order_by("created_at")
    )
    l2_versions = TenantKeyVersion.objects.select_related("parent").order_by("version")
    by_l2: dict[Any, list[TenantKeyVersion]] = {}
    for l2v in l2_versions:
        by_l2.setdefault(l2v.key_id, []).append(l2v)
    l3s = ServiceKey.objects.prefetch_related("versions__parent").order_by("name")
    l3_by_l2: dict[Any, list[ServiceKey]] = {}
    for l3 in l3s:
        l3_by_l2.setdefault(l3.tenant_key_id, []).append(l3)
    tree = []
    for l1 in l1s:
        l2 = l1.tenant_key
        tree.append(
            _key(
                l1,
                "L1",
                name=l1.name,
                description=l1.description,
                origin=l1.origin,
                versions=_versions(l1, sorted(l1.versions.all(), key=lambda v: v.version)),
                tenant_key=_key(
                    l2,
                    "L2",
                    versions=_versions(l2, by_l2.get(l2.pk, [])),
                    service_keys=[
                        _key(
                            l3,
                            "L3",
                            name=l3.name,
                            description=l3.description,
                            versions=_versions(
                                l3, sorted(l3.versions.all(), key=lambda v: v.version)
                            ),
                        )
                        for l3 in l3_by_l2.get(l2.pk, [])
                    ],
                ),
            )
        )
    return tree


def chain_summary() -> dict[str, int]:
    return {
        "customer_keys": CustomerKey.objects.count(),
        "service_keys": ServiceKey.objects.count(),
        "enabled_service_keys": ServiceKey.objects.filter(state=KeyState.ENABLED).count(),
        "pending_deletion": CustomerKey.objects.filter(state=KeyState.PENDING_DELETION).count()
        + ServiceKey.objects.filter(state=KeyState.PENDING_DELETION).count(),
    }
