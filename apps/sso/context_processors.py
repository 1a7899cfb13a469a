from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from apps.sso.selectors import provider_get


def sso(request: HttpRequest) -> dict[str, Any]:
    """The tenant's provider, for the sign-in page's button (only there: one query)."""
    match = getattr(request, "resolver_match", None)
    tenant = getattr(request, "tenant", None)
    if tenant is None or match is None or match.view_name != "console:login":
        return {}
    return {"kcm_sso": provider_get(tenant=tenant)}
