"""Where approval requests are kept and who they run as: a tenant's (its schema, its members)
or the platform's (the public schema, its operators). The services and selectors take a
`Ledger`; everything else about a request (states, steps, audit) is the same for both."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from apps.approvals.actions import ACTIONS, GatedAction
from apps.approvals.models import ApprovalRequest, RequestBase
from apps.approvals.platform.actions import PLATFORM_ACTIONS
from apps.approvals.platform.models import PlatformApprovalRequest
from apps.core.roles import Role
from apps.core.tenancy import Principal
from apps.tenants.access import current_tenant
from apps.tenants.grants import grant_load
from apps.tenants.models import Membership, Tenant


@dataclass(frozen=True)
class Ledger:
    name: str
    request_model: type[RequestBase]
    actions: Mapping[str, GatedAction]
    tenant: Callable[[], Tenant]  # whose memberships the requester and approvers hold

    def requests(self) -> Any:
        return self.request_model._default_manager

    def label(self, action: str) -> str:
        gated = self.actions.get(action)
        return gated.label if gated is not None else action


def _platform_tenant() -> Tenant:
    return Tenant.objects.get(schema_name="public")


TENANT = Ledger("tenant", ApprovalRequest, ACTIONS, current_tenant)
PLATFORM = Ledger("platform", PlatformApprovalRequest, PLATFORM_ACTIONS, _platform_tenant)


def requester_principal(ledger: Ledger, request: RequestBase) -> Principal:
    """The requester as a principal, for running the stored action: the roles they asked with,
    less any they no longer hold (a person removed since holds none). A request made by the
    system (no person) keeps the roles it was made with."""
    kind, _, label = request.requester_actor.partition(":")
    asked = frozenset(role for role in request.requester_role.split(",") if role)
    tenant = ledger.tenant()
    person = request.requester_person
    roles, grant = asked, None
    if person is not None:
        member = Membership.objects.filter(tenant=tenant, user_id=person).first()
        held = frozenset(member.roles) if member is not None else frozenset()
        roles = asked & held
        if member is not None and Role.KEY_USER in roles:
            grant = grant_load(member.key_grant)
    return Principal(
        kind=kind or "user",
        id=person or 0,
        label=label or request.requester_actor,
        roles=roles,
        tenant_id=tenant.pk,
        user_id=person,
        key_grant=grant,
    )
