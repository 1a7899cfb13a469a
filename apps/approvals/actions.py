"""The actions a tenant's policy may gate, and how an approved request runs each one: through
the same service call as the ungated endpoint, as the requester (the `Principal` rebuilt from
their membership, holding no more than they held when they asked)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from apps.core.roles import Role
from apps.core.tenancy import Principal
from apps.keychain import byok, hyok, selectors
from apps.keychain import services as keychain
from apps.keychain.api import key_body
from apps.keychain.errors import InvalidKeyState
from apps.keychain.models import CustomerKey, ExternalKeyManager, Origin
from apps.rotation import services as rotation
from apps.tenants import services as tenants
from apps.tenants.access import current_tenant
from apps.tenants.grants import grant_load
from apps.tenants.models import Membership

POLICY_SET = "approval.policy.set"
MEMBER_ROLE_CHANGE = "member.role_change"
# Granting one of these to a member is what `member.role_change` gates.
PRIVILEGED_ROLES = frozenset({Role.KEY_ADMIN, Role.TENANT_ADMIN})

Params = dict[str, Any]


def is_l1(target: str, params: Params) -> bool:
    """Key actions are gated on L1s only; a missing key is left to the service to report."""
    return CustomerKey.objects.filter(pk=target).exists()


def _no_check(target: str, params: Params, principal: Principal) -> None:
    return None


def _deletion_check(target: str, params: Params, principal: Principal) -> None:
    keychain.deletion_date_after(params["pending_days"])  # invalid_pending_days, before asking


def _rotate_check(target: str, params: Params, principal: Principal) -> None:
    if CustomerKey.objects.filter(pk=target).exclude(origin=Origin.HSM).exists():
        raise InvalidKeyState(
            "A BYOK key rotates by importing new material as a new version; a HYOK key by "
            "linking another external key."
        )


@dataclass(frozen=True)
class GatedAction:
    """`check` refuses at request time what the service would refuse on any day (bad
    parameters, an impossible action), so approvers never approve a request bound to fail;
    what depends on the moment (the key's state) is the service's to check when it runs."""

    label: str
    run: Callable[[str, Params, Principal], dict[str, Any]]  # (target, params, as) -> result
    # Whether the policy gates it for this target and these parameters.
    applies: Callable[[str, Params], bool] = is_l1
    check: Callable[[str, Params, Principal], None] = _no_check  # (target, params, requester)
    # The roles the requester must still hold when it runs (else `requester_lost_role`).
    needs: Callable[[Params], frozenset[str]] = lambda params: frozenset({Role.KEY_ADMIN})
    # The person the action is about, who may not approve it (a member being promoted).
    subject: Callable[[str], int | None] = lambda target: None


def _policy_set(target: str, params: Params, principal: Principal) -> dict[str, Any]:
    from apps.approvals import policy  # policy.py imports this module's names

    return policy.policy_body(policy.policy_apply(**params))


def _key_manager_delete(target: str) -> dict[str, Any]:
    hyok.key_manager_delete(manager_id=target)
    return {"deleted": target}


# --- member.role_change: granting key_admin or tenant_admin -----------------------------------


def _grants_privilege(target: str, params: Params) -> bool:
    """Whether the change gives the member key_admin or tenant_admin they do not hold now."""
    if "roles" not in params or not target.isdigit():
        return False
    member = Membership.objects.filter(pk=int(target), tenant=current_tenant()).first()
    if member is None:
        return False  # the service answers member_not_found
    return bool((set(params["roles"]) - set(member.roles)) & PRIVILEGED_ROLES)


def _member_update(target: str, params: Params, principal: Principal) -> Membership:
    grant = {"key_grant": grant_load(params["key_grant"])} if "key_grant" in params else {}
    return tenants.member_update(
        tenant=current_tenant(),
        membership_id=int(target),
        actor=principal,
        roles=params.get("roles"),
        **grant,
    )


def _member_run(target: str, params: Params, principal: Principal) -> dict[str, Any]:
    member = _member_update(target, params, principal)
    return {
        "id": member.pk,
        "username": member.user.username,
        "roles": member.roles,
        "key_grant": member.key_grant,
    }


def _member_check(target: str, params: Params, principal: Principal) -> None:
    """The service's own checks (own roles, roles not held, the grant, the last tenant admin),
    by running it in a savepoint that is always rolled back: the request is refused now with
    the code the change itself would get, and nothing is written."""
    with transaction.atomic():
        _member_update(target, params, principal)
        transaction.set_rollback(True)


def _member_person(target: str) -> int | None:
    if not target.isdigit():
        return None
    rows = Membership.objects.filter(pk=int(target), tenant=current_tenant())
    return rows.values_list("user_id", flat=True).first()


def _member_needs(params: Params) -> frozenset[str]:
    """A tenant admin who still holds every privileged role the change grants."""
    return frozenset({Role.TENANT_ADMIN}) | (frozenset(params.get("roles", ())) & PRIVILEGED_ROLES)


ACTIONS: dict[str, GatedAction] = {
    "key.disable": GatedAction(
        "Disable a customer key", lambda t, p, _: key_body(keychain.key_disable(key_id=t))
    ),
    "key.schedule_deletion": GatedAction(
        "Schedule the deletion of a customer key",
        lambda t, p, _: key_body(
            keychain.key_schedule_deletion(key_id=t, pending_days=p["pending_days"])
        ),
        check=_deletion_check,
    ),
    "key.rotate": GatedAction(
        "Rotate a customer key",
        lambda t, p, _: key_body(rotation.key_rotate_with_rewrap(key_id=t)),
        check=_rotate_check,
    ),
    "key.import_delete": GatedAction(
        "Delete a BYOK key's imported material",
        lambda t, p, _: selectors.customer_key_material_of(byok.material_delete(key_id=t).pk),
    ),
    "key.link_version": GatedAction(
        "Link another external key as a HYOK key's next version",
        lambda t, p, _: selectors.customer_key_material_of(
            hyok.customer_key_link_version(
                key_id=t,
                external_key_id=p["external_key_id"],
                manager_id=p.get("key_manager_id"),
            ).pk
        ),
    ),
    "key_manager.delete": GatedAction(
        "Delete (unlink) a HYOK key manager",
        lambda t, p, _: _key_manager_delete(t),
        applies=lambda t, p: ExternalKeyManager.objects.filter(pk=t).exists(),
    ),
    MEMBER_ROLE_CHANGE: GatedAction(
        "Make a member key admin or tenant admin",
        _member_run,
        applies=_grants_privilege,
        check=_member_check,
        needs=_member_needs,
        subject=_member_person,
    ),
    POLICY_SET: GatedAction(
        "Change the approval policy",
        _policy_set,
        applies=lambda t, p: True,
        needs=lambda p: frozenset({Role.TENANT_ADMIN}),
    ),
}
