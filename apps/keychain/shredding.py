"""What a tenant holds in the platform keystore, for crypto-shredding when it is terminated.

The tenants app drops a terminated tenant's schema at once, but the HSM objects of its L1
versions (HSM and BYOK origins) and of its BYOK wrapping keys stay until their destruction is
due (apps.tenants.shredding). A customer's own key manager (HYOK) holds its keys: never listed.
"""

from __future__ import annotations

from typing import Any

from django_tenants.utils import schema_context, schema_exists

from apps.keychain.models import CustomerKeyVersion, ImportToken, VersionState


def platform_handles(*, tenant: Any, **_: Any) -> list[tuple[str, str]]:
    """(kind, handle) of every platform-keystore object of `tenant`'s key chain still present,
    kind "root" (an L1 version's key) or "wrapping" (a BYOK wrapping key pair); receiver of
    `apps.core.signals.tenant_terminating`."""
    if not schema_exists(tenant.schema_name):
        return []
    with schema_context(tenant.schema_name):
        roots = (
            CustomerKeyVersion.objects.filter(external_manager__isnull=True)
            .exclude(handle="")
            .exclude(state=VersionState.DESTROYED)
            .values_list("handle", flat=True)
        )
        wrapping = ImportToken.objects.exclude(wrapping_handle="").values_list(
            "wrapping_handle", flat=True
        )
        return sorted({*(("root", h) for h in roots), *(("wrapping", h) for h in wrapping)})
