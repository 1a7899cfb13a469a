"""API rate limits, per client address and per credential (API token or console user).

A rate is "<count>/<s|min|h|d>", or "off". Each limit is a token bucket per key, kept in the
web process (so limits are per web process, as documented): it holds up to <count> requests
and refills at <count> per period, so a client may use its whole allowance at once and then
waits for the refill. Checking it is O(1) and writes nothing: DRF's own throttle kept a list of
every request's time per key in Django's cache (one pickle and unpickle of up to <count>
floats per request and limit). An exceeded limit is DRF's `Throttled`: 429, `Retry-After`,
problem+json code `throttled` (apps.core.errors).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from apps.core.clientip import client_ip
from apps.core.tenancy import Principal

_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}  # by first letter, as DRF reads them
MAX_KEYS = 100_000  # beyond this, the least recently used buckets are forgotten


def parse_rate(rate: str) -> tuple[int, float]:
    """(requests, period in seconds) of "<count>/<s|min|h|d>"."""
    count, _, period = rate.partition("/")
    return int(count), _PERIODS[period.strip()[:1]]


class Buckets:
    """Token buckets by key: (tokens left, time of the last refill)."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, capacity: int, period: float) -> float:
        """Take one request from `key`'s bucket: 0.0 if allowed, else the seconds to wait."""
        rate = capacity / period
        now = time.monotonic()
        with self._lock:
            # Popped and put back: the dict's order is then least recently used first.
            tokens, last = self._buckets.pop(key, (float(capacity), now))
            tokens = min(float(capacity), tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > MAX_KEYS:
                    self._forget_least_recent()
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate

    def _forget_least_recent(self) -> None:
        # Past the bound, the least recently used tenth goes: a busy token or address (used
        # recently) keeps its count however many other keys a client cycles through.
        for key in list(self._buckets)[: max(1, len(self._buckets) // 10)]:
            del self._buckets[key]

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()


buckets = Buckets()


def network_of(address: str) -> str:
    """What one client is, for the per-address limit: an IPv4 address, or an IPv6 address's
    /64 (one host usually holds a whole /64, so its addresses are one client)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # an IPv4 client seen through an IPv6 socket
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class _SettingRateThrottle(BaseThrottle):
    setting = ""

    def __init__(self) -> None:
        self._wait = 0.0

    def rate(self) -> tuple[int, float] | None:
        # Read at each request (not at import, as DRF does) so that a changed setting applies.
        rate = str(getattr(settings, self.setting)).strip().lower()
        return None if rate in ("", "off", "0") else parse_rate(rate)

    def key(self, request: Request) -> str | None:
        raise NotImplementedError

    def allow_request(self, request: Request, view: Any) -> bool:
        rate = self.rate()
        key = None if rate is None else self.key(request)
        if rate is None or key is None:
            return True
        self._wait = buckets.take(key, *rate)
        return self._wait == 0.0

    def wait(self) -> float | None:
        return max(1.0, self._wait) if self._wait else None


class AddressRateThrottle(_SettingRateThrottle):
    """Every API request from one client address, checked before authentication so that
    guessing tokens is limited too (see KcmAPIView.initial)."""

    setting = "KCM_API_RATE_PER_ADDRESS"

    def key(self, request: Request) -> str | None:
        address = client_ip(request._request)
        return f"address:{network_of(address)}" if address else None


class PrincipalRateThrottle(_SettingRateThrottle):
    """Every API request made with one API token (or one console user's session)."""

    setting = "KCM_API_RATE_PER_TOKEN"

    def key(self, request: Request) -> str | None:
        principal = request.auth
        if not isinstance(principal, Principal):
            return None
        if principal.token_id is not None:
            return f"token:{principal.token_id}"
        return f"user:{principal.user_id}"
