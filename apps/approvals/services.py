"""Approval requests: made by the gate, approved, denied, withdrawn, expired, and executed
exactly once, as the requester, when the last approval arrives. A run the service refused
(FAILED) may be retried by the requester (`request_execute`) until the request expires.

Every step locks the request's row (select_for_update) and records an audit event in the same
transaction, so of concurrent approvals exactly one sees the count reached and runs the action.
A tenant's requests and the platform's follow the same steps, in their own `Ledger`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django_tenants.utils import get_public_schema_name

from apps.approvals.actions import ACTIONS, POLICY_SET
from apps.approvals.ledgers import PLATFORM, TENANT, Ledger, requester_principal
from apps.approvals.models import ApprovalPolicy, RequestBase, RequestState
from apps.approvals.platform.actions import PLATFORM_ACTIONS
from apps.approvals.policy import policy_apply, policy_check, policy_get
from apps.approvals.selectors import request_body
from apps.audit.context import current, reset_context, set_context
from apps.audit.services import audit_record
from apps.core.errors import Conflict, Forbidden, KcmError, NotFound
from apps.core.roles import Role
from apps.core.tenancy import Principal
from apps.tenants.access import person_of
from apps.tenants.models import Membership


class ApprovalPending(Conflict):
    code = "approval_pending"
    title = "An approval request for this action on this key is already pending"


class RequestNotPending(Conflict):
    code = "approval_not_pending"
    title = "The approval request is no longer pending"


# --- the gate --------------------------------------------------------------------------------


def gate(
    principal: Principal, action: str, target: str, params: dict[str, Any]
) -> dict[str, Any] | None:
    """apps.core.approvals' gate: the request body when the policy covers `action` (on an L1
    for key actions, on an existing target otherwise), else None."""
    gated = ACTIONS.get(action)
    if gated is None:
        return None
    policy = policy_get()
    if action not in policy.actions:
        return None
    if not gated.applies(target, params):
        return None
    gated.check(target, params, principal)
    return request_body(
        request_create(
            principal=principal,
            action=action,
            target=target,
            params=params,
            required=policy.required,
            approver_role=policy.approver_role,
            expiry_days=policy.expiry_days,
        )
    )


def gates_action(action: str) -> bool:
    """Whether the current tenant's policy lists `action` (never on the public schema, where
    tenant policies do not live)."""
    if connection.schema_name == get_public_schema_name():  # type: ignore[attr-defined]
        return False
    return action in policy_get().actions


def platform_gate(
    principal: Principal, action: str, target: str, params: dict[str, Any]
) -> dict[str, Any] | None:
    """The platform's gate (terminate a tenant): the request body when
    KCM_PLATFORM_APPROVALS_REQUIRED is above 0, else None. Refused (409
    `not_enough_approvers`) when fewer other operators exist than the setting requires."""
    gated = PLATFORM_ACTIONS.get(action)
    required = settings.KCM_PLATFORM_APPROVALS_REQUIRED
    if gated is None or required < 1:
        return None
    gated.check(target, params, principal)
    requester = person_of(principal)
    operators = Membership.objects.filter(
        tenant=PLATFORM.tenant(), roles__contains=[Role.PLATFORM_OPERATOR]
    )
    if requester is not None:
        operators = operators.exclude(user_id=requester)
    eligible = operators.count()
    if eligible < required:
        raise Conflict(
            f"Terminating a tenant needs {required} approvals by other platform operators "
            f"(KCM_PLATFORM_APPROVALS_REQUIRED); this platform has {eligible}.",
            code="not_enough_approvers",
        )
    return request_body(
        request_create(
            principal=principal,
            action=action,
            target=target,
            params=params,
            required=required,
            approver_role=Role.PLATFORM_OPERATOR,
            expiry_days=settings.KCM_PLATFORM_APPROVAL_EXPIRY_DAYS,
            ledger=PLATFORM,
        )
    )


def request_create(
    *,
    principal: Principal,
    action: str,
    target: str,
    params: dict[str, Any],
    required: int,
    approver_role: str,
    expiry_days: int,
    ledger: Ledger = TENANT,
) -> RequestBase:
    """Store the exact action and parameters; 409 `approval_pending` if the same action on the
    same target is already waiting."""
    expire_due(action=action, target=target, ledger=ledger)
    now = timezone.now()
    try:
        with transaction.atomic():
            request = ledger.requests().create(
                action=action,
                target=target,
                params=params,
                required=required,
                approver_role=approver_role,
                requester_person=person_of(principal),
                requester_actor=principal.actor,
                requester_role=principal.role,
                created_at=now,
                expires_at=now + timedelta(days=expiry_days),
            )
            audit_record(
                action="approval.request",
                target=str(request.pk),
                details={
                    "action": action,
                    "target": target,
                    "params": params,
                    "required": required,
                    "approver_role": approver_role,
                },
            )
    except IntegrityError:
        raise ApprovalPending() from None
    return request


def policy_set(
    *,
    principal: Principal,
    actions: list[str],
    required: int,
    approver_role: str,
    expiry_days: int,
) -> ApprovalPolicy | dict[str, Any]:
    """Set the policy (checked: `not_enough_approvers` and the rest), or, when the current
    policy gates its own change, the approval request the change became (its body)."""
    params = policy_check(
        actions=actions,
        required=required,
        approver_role=approver_role,
        expiry_days=expiry_days,
        requester=person_of(principal),
    )
    pending = gate(principal, POLICY_SET, "policy", params)
    return pending if pending is not None else policy_apply(**params)


# --- decisions -------------------------------------------------------------------------------


def _locked(request_id: UUID | str, ledger: Ledger) -> RequestBase:
    request: RequestBase | None = (
        ledger.requests().select_for_update().filter(pk=request_id).first()
    )
    if request is None:
        raise NotFound("No such approval request.", code="approval_not_found")
    return request


def _expire(request: RequestBase, now: Any) -> None:
    request.state = RequestState.EXPIRED
    request.decided_at = now
    request.save(update_fields=["state", "decided_at"])
    audit_record(
        action="approval.expire",
        target=str(request.pk),
        details={"action": request.action, "target": request.target},
    )


def _open(request_id: UUID | str, ledger: Ledger) -> RequestBase | None:
    """The locked request if it is still pending; None (after recording its expiry) if it has
    expired; RequestNotPending otherwise. Call inside a transaction."""
    request = _locked(request_id, ledger)
    if request.state != RequestState.PENDING:
        raise RequestNotPending(f"The approval request is {request.state}.")
    now = timezone.now()
    if request.expires_at <= now:
        _expire(request, now)
        return None
    return request


def _expired() -> Conflict:
    return Conflict("The approval request has expired.", code="approval_expired")


def _check_approver(
    request: RequestBase, principal: Principal, person: int | None, ledger: Ledger
) -> None:
    if person is not None and person == request.requester_person:
        raise Forbidden(
            "The requester cannot approve or deny their own request.",
            code="requester_cannot_approve",
        )
    gated = ledger.actions.get(request.action)
    if person is not None and gated is not None and gated.subject(request.target) == person:
        raise Forbidden(
            "The member this request is about cannot approve or deny it.",
            code="subject_cannot_approve",
        )
    if person is None or request.approver_role not in principal.roles:
        raise Forbidden(
            f"Only members holding {request.approver_role} approve this request.",
            code="not_an_approver",
        )


def request_approve(
    *, request_id: UUID | str, principal: Principal, ledger: Ledger = TENANT
) -> RequestBase:
    """Add `principal`'s approval; the approval that reaches the count runs the action."""
    person = person_of(principal)
    with transaction.atomic():
        request = _open(request_id, ledger)
        if request is not None:
            _check_approver(request, principal, person, ledger)
            assert person is not None
            approvals = request.approvals  # type: ignore[attr-defined]
            if approvals.filter(person=person).exists():
                raise Conflict("You have approved this request already.", code="already_approved")
            approvals.create(person=person, actor=principal.actor)
            count = len(_standing(request, ledger))
            audit_record(
                action="approval.approve",
                target=str(request.pk),
                details={
                    "action": request.action,
                    "approvals": count,
                    "required": request.required,
                },
            )
            if count >= request.required:
                _execute(request, ledger)
    if request is None:
        raise _expired()
    return request


def request_execute(
    *, request_id: UUID | str, principal: Principal, ledger: Ledger = TENANT
) -> RequestBase:
    """The requester runs an approved request again after its run was refused (FAILED: say the
    key was in the wrong state, since put right). Only a FAILED, unexpired request; under the
    row's lock, so of concurrent retries one runs and the others see it EXECUTED."""
    person = person_of(principal)
    with transaction.atomic():
        request = _locked(request_id, ledger)
        if person is None or person != request.requester_person:
            raise Forbidden(
                "Only the requester runs an approved request again.", code="not_the_requester"
            )
        if request.state != RequestState.FAILED:
            raise RequestNotPending(
                f"The approval request is {request.state}; only a FAILED one is run again."
            )
        if request.expires_at <= timezone.now():
            raise _expired()
        request.error_code = ""
        request.reason = ""
        _execute(request, ledger)
    return request


def _standing(request: RequestBase, ledger: Ledger) -> list[Any]:
    """The request's approvals whose approver still is an active member holding the approver
    role: an approval given by someone since removed or demoted no longer counts."""
    approvals = list(request.approvals.all())  # type: ignore[attr-defined]
    holders = set(
        Membership.objects.filter(
            tenant=ledger.tenant(),
            user_id__in=[a.person for a in approvals],
            user__is_active=True,
            roles__contains=[request.approver_role],
        ).values_list("user_id", flat=True)
    )
    return [a for a in approvals if a.person in holders]


def _execute(request: RequestBase, ledger: Ledger) -> None:
    """Run the stored payload as the requester (their name on the action's own audit event),
    in a savepoint: a refusal by the service marks the request FAILED with its code. Approvals
    given to someone since removed or demoted never act in their name (`requester_lost_role`),
    nor do approvals whose approvers have since lost the approver role (`approvals_lapsed`).
    """
    gated = ledger.actions[request.action]
    token = set_context(
        replace(current(), actor=request.requester_actor, role=request.requester_role)
    )
    try:
        if len(_standing(request, ledger)) < request.required:
            raise Forbidden(
                "Some approvers have since lost the approver role: fewer approvals stand than "
                "the request needs; nothing was done.",
                code="approvals_lapsed",
            )
        requester = requester_principal(ledger, request)
        if not gated.needs(dict(request.params)) <= requester.roles:
            raise Forbidden(
                "The requester no longer holds the role this action needs; nothing was done.",
                code="requester_lost_role",
            )
        with transaction.atomic():
            request.result = gated.run(request.target, dict(request.params), requester)
        request.state = RequestState.EXECUTED
    except KcmError as exc:
        request.state = RequestState.FAILED
        request.error_code = exc.code
        request.reason = exc.detail[:500]
    finally:
        reset_context(token)
    request.decided_at = timezone.now()
    request.save()
    audit_record(
        action="approval.execute",
        outcome="success" if request.state == RequestState.EXECUTED else "error",
        error_code=request.error_code,
        target=str(request.pk),
        details={
            "action": request.action,
            "target": request.target,
            "params": request.params,
            "requested_by": request.requester_actor,
            "approved_by": [a.actor for a in request.approvals.all()],  # type: ignore[attr-defined]
        },
    )


def request_deny(
    *, request_id: UUID | str, principal: Principal, reason: str, ledger: Ledger = TENANT
) -> RequestBase:
    """An approver refuses the request, with a reason; it never runs."""
    person = person_of(principal)
    with transaction.atomic():
        request = _open(request_id, ledger)
        if request is not None:
            _check_approver(request, principal, person, ledger)
            _close(request, RequestState.DENIED, principal, reason)
            audit_record(
                action="approval.deny",
                target=str(request.pk),
                details={"action": request.action, "reason": reason},
            )
    if request is None:
        raise _expired()
    return request


def request_withdraw(
    *, request_id: UUID | str, principal: Principal, ledger: Ledger = TENANT
) -> RequestBase:
    """The requester takes the request back."""
    person = person_of(principal)
    with transaction.atomic():
        request = _open(request_id, ledger)
        if request is not None:
            if person is None or person != request.requester_person:
                raise Forbidden("Only the requester withdraws a request.", code="not_the_requester")
            _close(request, RequestState.WITHDRAWN, principal, "")
            audit_record(
                action="approval.withdraw",
                target=str(request.pk),
                details={"action": request.action},
            )
    if request is None:
        raise _expired()
    return request


def _close(request: RequestBase, state: str, principal: Principal, reason: str) -> None:
    request.state = state
    request.decided_at = timezone.now()
    request.decided_by = principal.actor
    request.reason = reason
    request.save()


def expire_due(
    *, action: str | None = None, target: str | None = None, ledger: Ledger = TENANT
) -> int:
    """Mark every pending request past its expiry EXPIRED (one audit event each)."""
    due = ledger.requests().filter(state=RequestState.PENDING, expires_at__lte=timezone.now())
    if action is not None:
        due = due.filter(action=action, target=target)
    count = 0
    for request_id in due.values_list("pk", flat=True):
        with transaction.atomic():
            request = _locked(request_id, ledger)
            now = timezone.now()
            if request.state == RequestState.PENDING and request.expires_at <= now:
                _expire(request, now)
                count += 1
    return count
