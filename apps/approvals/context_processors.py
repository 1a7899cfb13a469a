from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from apps.approvals.ledgers import PLATFORM
from apps.approvals.policy import APPROVER_ROLES
from apps.approvals.selectors import pending_for
from apps.core.roles import Role


def approvals(request: HttpRequest) -> dict[str, Any]:
    """The navigation's pending count: one COUNT query, only on a console page and only for
    members who may approve (on the platform console: operators, of the platform's requests)."""
    tenant = getattr(request, "tenant", None)
    principal = getattr(request, "kcm_principal", None)
    if tenant is None or principal is None:
        return {}
    if tenant.schema_name == "public":
        if Role.PLATFORM_OPERATOR not in principal.roles:
            return {}
        count = pending_for(
            roles=frozenset({Role.PLATFORM_OPERATOR}), person=principal.user_id, ledger=PLATFORM
        )
        return {"kcm_approvals_pending": count}
    roles = principal.roles & frozenset(APPROVER_ROLES)
    if not roles:
        return {}
    return {"kcm_approvals_pending": pending_for(roles=roles, person=principal.user_id)}
