"""The client's address: REMOTE_ADDR, or what trusted proxies say in X-Forwarded-For.

X-Forwarded-For is written by whoever sends the request, so it is believed only as far as
the proxies in KCM_TRUSTED_PROXIES vouch for it: starting from the peer (REMOTE_ADDR), while the
hop we look at is a trusted proxy, step one entry left in the header. The first address that is
not a trusted proxy is the client. Without trusted proxies the header is ignored.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def _address(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: Address, networks: tuple[Network, ...]) -> bool:
    return any(address in network for network in networks)


def client_ip(request: HttpRequest) -> str:
    """The address of the client that sent `request` (empty if none is known)."""
    meta = request.META
    return _client_ip(
        meta.get("REMOTE_ADDR", ""),
        meta.get("HTTP_X_FORWARDED_FOR", ""),
        tuple(settings.KCM_TRUSTED_PROXIES),
    )


@lru_cache(maxsize=4096)
def _client_ip(remote_addr: str, forwarded: str, proxies: tuple[str, ...]) -> str:
    # Parsing addresses costs more than the rest of a data-key request's checks: every
    # request asks twice (audit context, rate limit), and the same few peers ask again.
    peer = _address(remote_addr)
    if peer is None:
        return ""
    networks = _networks(proxies)
    if not networks or not _trusted(peer, networks):
        return str(peer)
    client = peer
    for hop in reversed([part for part in forwarded.split(",") if part.strip()]):
        address = _address(hop)
        if address is None:  # garbage from beyond the last trusted proxy: stop there
            break
        client = address
        if not _trusted(address, networks):
            break
    return str(client)
