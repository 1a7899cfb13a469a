"""Reads of approval requests: the list, one request, and the navigation's pending count."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.utils import timezone

from apps.approvals.ledgers import TENANT, Ledger
from apps.approvals.models import RequestBase, RequestState
from apps.core.errors import NotFound, ValidationFailed

LIST_LIMIT = 200


def request_list(*, state: str | None = None, ledger: Ledger = TENANT) -> list[RequestBase]:
    """Newest first; `state` one of RequestState (a pending one past its expiry shows as
    PENDING until the next write marks it EXPIRED; `expires_at` tells)."""
    if state is not None and state not in RequestState.values:
        raise ValidationFailed(
            f"state must be one of {', '.join(RequestState.values)}.", code="invalid_state"
        )
    requests = ledger.requests().prefetch_related("approvals")
    if state is not None:
        requests = requests.filter(state=state)
    return list(requests[:LIST_LIMIT])


def request_get(*, request_id: UUID | str, ledger: Ledger = TENANT) -> RequestBase:
    request: RequestBase | None = (
        ledger.requests().prefetch_related("approvals").filter(pk=request_id).first()
    )
    if request is None:
        raise NotFound("No such approval request.", code="approval_not_found")
    return request


def pending_for(*, roles: frozenset[str], person: int | None, ledger: Ledger = TENANT) -> int:
    """How many live requests wait on someone holding `roles` (one COUNT query), not counting
    the person's own requests."""
    pending = ledger.requests().filter(
        state=RequestState.PENDING, approver_role__in=roles, expires_at__gt=timezone.now()
    )
    if person is not None:
        pending = pending.exclude(requester_person=person)
    return int(pending.count())


def request_body(request: RequestBase) -> dict[str, Any]:
    approvals = list(request.approvals.all())  # type: ignore[attr-defined]
    return {
        "id": str(request.pk),
        "action": request.action,
        "target": request.target,
        "params": request.params,
        "state": request.state,
        "required": request.required,
        "approver_role": request.approver_role,
        "requested_by": request.requester_actor,
        "approvals": [{"by": a.actor, "at": a.created_at} for a in approvals],
        "created_at": request.created_at,
        "expires_at": request.expires_at,
        "decided_at": request.decided_at,
        "decided_by": request.decided_by,
        "reason": request.reason,
        "result": request.result,
        "error_code": request.error_code,
    }
