"""What the audit log records of other layers' hooks (connected in AuditConfig.ready())."""

from __future__ import annotations

from typing import Any

from apps.audit.models import Outcome
from apps.audit.services import audit_record


def request_outcome_record(
    sender: object,
    *,
    action: str,
    outcome: str,
    target: str,
    target_version: int | None,
    error_code: str,
    details: dict[str, Any],
    chained: bool,
    **kwargs: Any,
) -> None:
    """apps.core.signals.request_outcome: one event for the request."""
    audit_record(
        action=action,
        outcome=Outcome(outcome),
        target=target,
        target_version=target_version,
        error_code=error_code,
        details=details,
        chained=chained,
    )
