"""Recording audit events. Every service that changes state or uses a key calls `audit_record`.

Lifecycle events are written in the caller's transaction (if the audit write fails, the change
does not happen). Never pass key material or plaintext in `details`.
"""

from __future__ import annotations

from typing import Any


def audit_record(
    *,
    action: str,
    outcome: str = "success",
    target: str = "",
    target_version: int | None = None,
    error_code: str = "",
    details: dict[str, Any] | None = None,
) -> None:
    """Append one event to the current schema's audit log (the tenant's, or the platform's in
    the public schema). `action` is a stable dotted name such as ``key.rotate``; `outcome` is
    ``success``, ``denied`` or ``error`` (with `error_code`)."""
    # Implemented in the audit issue; the signature is the contract callers rely on.
    return None
