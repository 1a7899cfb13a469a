from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest


def kcm(request: HttpRequest) -> dict[str, Any]:
    tenant = getattr(request, "tenant", None)
    return {
        "kcm_tenant": tenant,
        "kcm_is_platform": tenant is not None and tenant.schema_name == "public",
        "kcm_software_provider": settings.KCM_HSM_PROVIDER == "software",
        "kcm_principal": getattr(request, "kcm_principal", None),
    }
