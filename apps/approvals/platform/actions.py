"""The platform's gated action (terminate a tenant) and its policy: the deployment's settings,
not a row an operator could change (KCM_PLATFORM_APPROVALS_REQUIRED, 0 for off, and
KCM_PLATFORM_APPROVAL_EXPIRY_DAYS)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from apps.approvals.actions import GatedAction, Params
from apps.core.roles import Role
from apps.core.tenancy import Principal
from apps.tenants import services as tenants
from apps.tenants.models import TenantStatus

TENANT_TERMINATE = "tenant.terminate"


def platform_policy() -> dict[str, Any]:
    """The platform policy as the API shows it (`actions` empty when approvals are off)."""
    required = settings.KCM_PLATFORM_APPROVALS_REQUIRED
    return {
        "actions": sorted(PLATFORM_ACTIONS) if required else [],
        "required": required,
        "approver_role": Role.PLATFORM_OPERATOR,
        "expiry_days": settings.KCM_PLATFORM_APPROVAL_EXPIRY_DAYS,
        "available_actions": sorted(PLATFORM_ACTIONS),
        "settings": ["KCM_PLATFORM_APPROVALS_REQUIRED", "KCM_PLATFORM_APPROVAL_EXPIRY_DAYS"],
    }


def _terminate_check(target: str, params: Params, principal: Principal) -> None:
    """A tenant that does not exist (404) or is already on its way out (409) is refused when
    asked, not after approvers have approved."""
    tenant = tenants.tenant_get(slug=target)
    if tenant.status in (TenantStatus.TERMINATING, TenantStatus.TERMINATED):
        raise tenants.InvalidTransition(
            f"Tenant {tenant.slug} is {tenant.status}; it cannot become TERMINATING."
        )


def _terminate_run(target: str, params: Params, principal: Principal) -> dict[str, Any]:
    tenant = tenants.tenant_terminate(
        tenant=tenants.tenant_get(slug=target), reason=params.get("reason", "")
    )
    return {"slug": tenant.slug, "status": tenant.status, "status_reason": tenant.status_reason}


PLATFORM_ACTIONS: dict[str, GatedAction] = {
    TENANT_TERMINATE: GatedAction(
        "Terminate a tenant",
        _terminate_run,
        applies=lambda t, p: True,
        check=_terminate_check,
        needs=lambda p: frozenset({Role.PLATFORM_OPERATOR}),
    ),
}
