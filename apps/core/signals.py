"""Hooks core offers the layers above it: core sends, and the layer that knows what to do
receives (core imports no app)."""

from __future__ import annotations

from typing import Any, Literal

from django.dispatch import Signal

Outcome = Literal["success", "denied", "error"]

# Sent by the edges in core (KcmAPIView, console_view, run_action) for a request whose outcome
# no service recorded: a refusal, a failure, or a success the view itself answers for.
# apps.audit records it as an event (its receiver is connected in AuditConfig.ready()).
request_outcome = Signal()


def request_outcome_send(
    *,
    action: str,
    outcome: Outcome,
    target: str = "",
    target_version: int | None = None,
    error_code: str = "",
    details: dict[str, Any] | None = None,
    chained: bool = True,
) -> None:
    """Send `request_outcome`. `chained`: as `apps.audit.services.audit_record` takes it
    (False on hot paths: the event is chained moments later, not under the chain's lock)."""
    request_outcome.send(
        sender=None,
        action=action,
        outcome=outcome,
        target=target,
        target_version=target_version,
        error_code=error_code,
        details=details or {},
        chained=chained,
    )


# Sent by apps.tenants, inside the transaction of a tenant's termination and before its schema
# is dropped, with `tenant`. Each receiver returns (kind, handle) of the platform-keystore objects
# that belong to the tenant, kind "root" or "wrapping" (apps.keychain: its L1 versions' keys and
# BYOK wrapping keys); the tenants app destroys them after the waiting period (crypto-shredding).
# A receiver may also release, in that transaction, what the tenant holds in the public schema
# (apps.keychain: its registrations of customers' PKCS#11 tokens), returning an empty list.
tenant_terminating = Signal()
