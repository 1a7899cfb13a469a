"""The actions a tenant's policy may gate, and how an approved request runs each one: through
the same service call as the ungated endpoint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apps.keychain import byok, selectors
from apps.keychain import services as keychain
from apps.keychain.api import key_body
from apps.rotation import services as rotation

POLICY_SET = "approval.policy.set"


@dataclass(frozen=True)
class GatedAction:
    label: str
    run: Callable[[str, dict[str, Any]], dict[str, Any]]  # (target, params) -> result
    l1_only: bool = True  # gated only when the target is an L1 (customer key)


def _policy_set(target: str, params: dict[str, Any]) -> dict[str, Any]:
    from apps.approvals import policy  # policy.py imports this module's names

    return policy.policy_body(policy.policy_apply(**params))


ACTIONS: dict[str, GatedAction] = {
    "key.disable": GatedAction(
        "Disable a customer key", lambda t, p: key_body(keychain.key_disable(key_id=t))
    ),
    "key.schedule_deletion": GatedAction(
        "Schedule the deletion of a customer key",
        lambda t, p: key_body(
            keychain.key_schedule_deletion(key_id=t, pending_days=p["pending_days"])
        ),
    ),
    "key.rotate": GatedAction(
        "Rotate a customer key", lambda t, p: key_body(rotation.key_rotate_with_rewrap(key_id=t))
    ),
    "key.import_delete": GatedAction(
        "Delete a BYOK key's imported material",
        lambda t, p: selectors.customer_key_material_of(byok.material_delete(key_id=t).pk),
    ),
    POLICY_SET: GatedAction("Change the approval policy", _policy_set, l1_only=False),
}
