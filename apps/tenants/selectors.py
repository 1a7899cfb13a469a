"""Reads for tenants, members and tokens, shared by console and API."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.core.errors import ValidationFailed
from apps.tenants.models import ApiToken, Domain, Membership, Tenant, TenantStatus


def tenant_list(*, status: str | None = None) -> QuerySet[Tenant]:
    queryset = Tenant.objects.filter(is_template=False).exclude(schema_name="public")
    if status:
        if status not in TenantStatus.values:
            raise ValidationFailed(
                f"status must be one of {', '.join(TenantStatus.values)}.", code="invalid_filter"
            )
        queryset = queryset.filter(status=status)
    return queryset


def tenants_for_upkeep() -> QuerySet[Tenant]:
    """The tenants whose keys and logs background work looks after (sweeps, syncs, rotation
    policies and jobs, audit sealing): every live tenant, suspended ones too, since suspending
    stops use, not upkeep (expired material must still go, due deletions and rotations still
    happen). Not the template, not the public schema; in creation order."""
    live = (TenantStatus.ACTIVE, TenantStatus.SUSPENDED)
    return (
        Tenant.objects.filter(is_template=False, status__in=live)
        .exclude(schema_name="public")
        .order_by("pk")
    )


def tenant_primary_domain(*, tenant: Tenant) -> str | None:
    domain = Domain.objects.filter(tenant=tenant, is_primary=True).values_list("domain", flat=True)
    return domain.first()


def membership_list(*, tenant: Tenant) -> QuerySet[Membership]:
    return Membership.objects.filter(tenant=tenant).select_related("user")


def api_token_list(*, tenant: Tenant) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(tenant=tenant)
