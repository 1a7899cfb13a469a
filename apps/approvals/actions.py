"""The actions a tenant's policy may gate, and how an approved request runs each one: through
the same service call as the ungated endpoint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apps.keychain import byok, hyok, selectors
from apps.keychain import services as keychain
from apps.keychain.api import key_body
from apps.keychain.errors import InvalidKeyState
from apps.keychain.models import CustomerKey, ExternalKeyManager, Origin
from apps.rotation import services as rotation

POLICY_SET = "approval.policy.set"


def is_l1(target: str) -> bool:
    """Key actions are gated on L1s only; a missing key is left to the service to report."""
    return CustomerKey.objects.filter(pk=target).exists()


def _no_check(target: str, params: dict[str, Any]) -> None:
    return None


def _deletion_check(target: str, params: dict[str, Any]) -> None:
    keychain.deletion_date_after(params["pending_days"])  # invalid_pending_days, before asking


def _rotate_check(target: str, params: dict[str, Any]) -> None:
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
    run: Callable[[str, dict[str, Any]], dict[str, Any]]  # (target, params) -> result
    applies: Callable[[str], bool] = is_l1  # whether the policy gates it for this target
    check: Callable[[str, dict[str, Any]], None] = _no_check


def _policy_set(target: str, params: dict[str, Any]) -> dict[str, Any]:
    from apps.approvals import policy  # policy.py imports this module's names

    return policy.policy_body(policy.policy_apply(**params))


def _key_manager_delete(target: str) -> dict[str, Any]:
    hyok.key_manager_delete(manager_id=target)
    return {"deleted": target}


ACTIONS: dict[str, GatedAction] = {
    "key.disable": GatedAction(
        "Disable a customer key", lambda t, p: key_body(keychain.key_disable(key_id=t))
    ),
    "key.schedule_deletion": GatedAction(
        "Schedule the deletion of a customer key",
        lambda t, p: key_body(
            keychain.key_schedule_deletion(key_id=t, pending_days=p["pending_days"])
        ),
        check=_deletion_check,
    ),
    "key.rotate": GatedAction(
        "Rotate a customer key",
        lambda t, p: key_body(rotation.key_rotate_with_rewrap(key_id=t)),
        check=_rotate_check,
    ),
    "key.import_delete": GatedAction(
        "Delete a BYOK key's imported material",
        lambda t, p: selectors.customer_key_material_of(byok.material_delete(key_id=t).pk),
    ),
    "key.link_version": GatedAction(
        "Link another external key as a HYOK key's next version",
        lambda t, p: selectors.customer_key_material_of(
            hyok.customer_key_link_version(
                key_id=t,
                external_key_id=p["external_key_id"],
                manager_id=p.get("key_manager_id"),
            ).pk
        ),
    ),
    "key_manager.delete": GatedAction(
        "Delete (unlink) a HYOK key manager",
        lambda t, p: _key_manager_delete(t),
        applies=lambda t: ExternalKeyManager.objects.filter(pk=t).exists(),
    ),
    POLICY_SET: GatedAction("Change the approval policy", _policy_set, applies=lambda t: True),
}
