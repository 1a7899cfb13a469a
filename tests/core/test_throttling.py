"""The API's rate limits as token buckets: the allowance at once, then the refill rate."""

from __future__ import annotations

import time

import pytest

from apps.core import throttling
from apps.core.throttling import Buckets, network_of, parse_rate


def test_rates_read_as_drf_reads_them() -> None:
    assert parse_rate("500/s") == (500, 1.0)
    assert parse_rate("3/min") == (3, 60.0)
    assert parse_rate("10/hour") == (10, 3600.0)
    assert parse_rate("1/d") == (1, 86400.0)


def test_a_bucket_allows_its_count_then_says_how_long_to_wait() -> None:
    buckets = Buckets()
    assert [buckets.take("k", 3, 60.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = buckets.take("k", 3, 60.0)
    assert 19.0 < wait <= 20.0  # one request's worth of refill at 3 per minute
    # Refused requests do not use the allowance up further.
    assert 19.0 < buckets.take("k", 3, 60.0) <= 20.0
    # Other keys have their own buckets.
    assert buckets.take("other", 3, 60.0) == 0.0


def test_a_bucket_refills_at_its_rate() -> None:
    buckets = Buckets()
    assert buckets.take("k", 20, 1.0) == 0.0
    for _ in range(19):
        buckets.take("k", 20, 1.0)
    assert buckets.take("k", 20, 1.0) > 0.0
    time.sleep(0.12)  # two requests' worth at 20/s
    assert buckets.take("k", 20, 1.0) == 0.0
    assert buckets.take("k", 20, 1.0) == 0.0


def test_buckets_stay_bounded_and_a_busy_key_keeps_its_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client cycling through many addresses fills the table; the least recently used
    buckets go, never the busy token's, whose exhausted allowance stays exhausted."""
    monkeypatch.setattr(throttling, "MAX_KEYS", 100)
    buckets = Buckets()
    while buckets.take("token:busy", 5, 3600.0) == 0.0:
        pass
    for n in range(1_000):
        assert buckets.take(f"address:{n}", 5, 1.0) == 0.0
        if n % 50 == 0:
            assert buckets.take("token:busy", 5, 3600.0) > 0.0  # still refused
    assert len(buckets._buckets) <= 101


def test_an_ipv6_client_is_its_64_and_an_ipv4_client_its_address() -> None:
    assert (
        network_of("2001:db8:1:2::1") == network_of("2001:db8:1:2:ffff::9") == ("2001:db8:1:2::/64")
    )
    assert network_of("2001:db8:1:3::1") != network_of("2001:db8:1:2::1")
    assert network_of("203.0.113.7") == "203.0.113.7"
    assert network_of("::ffff:203.0.113.7") == "203.0.113.7"
