"""What a terminated tenant's key chain leaves behind: what it holds in the platform keystore,
for crypto-shredding, and its registrations of customers' tokens, released.

The tenants app drops a terminated tenant's schema at once, but the HSM objects of its L1
versions (HSM and BYOK origins) and of its BYOK wrapping keys stay until their destruction is
due (apps.tenants.shredding). A customer's own key manager (HYOK) holds its keys: never listed;
but the PKCS#11 tokens the tenant registered (`apps.keystores.claims`) are released at once, so
that the customer can link them from another tenant.
"""

from __future__ import annotations

import logging
from typing import Any

from django_tenants.utils import schema_context, schema_exists

from apps.keychain.models import CustomerKeyVersion, ImportToken, VersionState
from apps.keystores.claims import token_claims_release

logger = logging.getLogger(__name__)


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


def token_claims_of_tenant_release(*, tenant: Any, **_: Any) -> list[tuple[str, str]]:
    """Release every customer PKCS#11 token `tenant` registered (KCM names a token's owner by
    the tenant's uid), in the termination's transaction; receiver of
    `apps.core.signals.tenant_terminating`, with nothing to destroy."""
    released = token_claims_release(owner=str(tenant.uid))
    if released:
        logger.info("released %d token registration(s) of tenant %s", released, tenant.slug)
    return []
