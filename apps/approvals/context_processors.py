from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from apps.approvals.policy import APPROVER_ROLES
from apps.approvals.selectors import pending_for


def approvals(request: HttpRequest) -> dict[str, Any]:
    """The navigation's pending count: one COUNT query, only on a tenant's console page and
    only for members who may approve."""
    tenant = getattr(request, "tenant", None)
    principal = getattr(request, "kcm_principal", None)
    if tenant is None or tenant.schema_name == "public" or principal is None:
        return {}
    roles = principal.roles & frozenset(APPROVER_ROLES)
    if not roles:
        return {}
    return {"kcm_approvals_pending": pending_for(roles=roles, person=principal.user_id)}
