"""API rate limits, per client address and per credential (API token or console user).

Counts live in Django's cache, so they are per web process unless a shared cache is
configured. An exceeded limit is DRF's `Throttled`: 429, `Retry-After`, problem+json code
`throttled` (apps.core.errors). A rate is "<count>/<s|min|h|d>", or "off".
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from apps.core.clientip import client_ip
from apps.core.tenancy import Principal


class _SettingRateThrottle(SimpleRateThrottle):
    setting = ""

    def __init__(self) -> None:
        # Read at each request (not at import, as DRF does) so that a changed setting applies.
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)

    def get_rate(self) -> str | None:
        rate = str(getattr(settings, self.setting)).strip().lower()
        return None if rate in ("", "off", "0") else rate


class AddressRateThrottle(_SettingRateThrottle):
    """Every API request from one client address, checked before authentication so that
    guessing tokens is limited too (see KcmAPIView.initial)."""

    scope = "address"
    setting = "KCM_API_RATE_PER_ADDRESS"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        address = client_ip(request._request)
        return f"kcm-throttle:address:{address}" if address else None


class PrincipalRateThrottle(_SettingRateThrottle):
    """Every API request made with one API token (or one console user's session)."""

    scope = "principal"
    setting = "KCM_API_RATE_PER_TOKEN"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        principal = request.auth
        if not isinstance(principal, Principal):
            return None
        if principal.token_id is not None:
            return f"kcm-throttle:token:{principal.token_id}"
        return f"kcm-throttle:user:{principal.user_id}"
