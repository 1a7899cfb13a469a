"""Four-eyes approval as a hook: the views of a sensitive action (in apps.keychain,
apps.rotation) ask `approval_gate` before acting; apps.approvals, a higher layer, registers the
gate. Without a registered gate (or when the tenant's policy does not cover the action) the
action runs at once, as before."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from apps.core.errors import KcmError
from apps.core.signals import request_outcome_send
from apps.core.tenancy import Principal

Gate = Callable[[Principal, str, str, dict[str, Any]], "dict[str, Any] | None"]
_gates: list[Gate] = []
_policies: list[Callable[[str], bool]] = []


def gate_register(gate: Gate) -> None:
    """Install the approval gate (apps.approvals does, once, when its app is ready)."""
    if gate not in _gates:
        _gates.append(gate)


def policy_register(gates_action: Callable[[str], bool]) -> None:
    """Install the question "does the current policy gate this action?" (apps.approvals)."""
    if gates_action not in _policies:
        _policies.append(gates_action)


def action_gated(action: str) -> bool:
    """Whether the current tenant's policy gates `action`: for a path that must not go round
    it (an invitation offering an admin role when granting one needs approval)."""
    return any(gates_action(action) for gates_action in _policies)


def approval_gate(
    *, principal: Principal, action: str, target: str, params: dict[str, Any]
) -> dict[str, Any] | None:
    """None when `action` on `target` may run now. Otherwise the approval request it became
    (its API body): the caller answers 202 with it instead of acting. Raises the gate's
    errors (a request already pending for the same action and key: 409)."""
    for gate in _gates:
        pending = gate(principal, action, target, params)
        if pending is not None:
            return pending
    return None


def console_gate(
    request: HttpRequest, *, action: str, target: str, params: dict[str, Any], next_url: str
) -> HttpResponse | None:
    """`approval_gate` for a console form: None to go on, or a redirect saying the action now
    waits for approval (a refusal is flashed as an error and audited)."""
    principal: Principal = request.kcm_principal  # type: ignore[attr-defined]
    try:
        pending = approval_gate(principal=principal, action=action, target=target, params=params)
    except KcmError as exc:
        request_outcome_send(
            action="approval.request",
            outcome="denied" if exc.status in (401, 403) else "error",
            error_code=exc.code,
            details={"path": request.path},
        )
        messages.error(request, exc.detail)
        return redirect(next_url)
    if pending is None:
        return None
    messages.success(
        request,
        f"This action needs {pending['required']} approvals: it waits on the Approvals page.",
    )
    return redirect(next_url)
