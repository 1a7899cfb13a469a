"""What the metrics record, in one process (tests/e2e/test_metrics.py scrapes a live stack).

Each test reads the counters before and after, since the process's registry is shared.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from apps.core import metrics
from apps.keychain.cache import KeyCache
from apps.keystores.base import KeystoreUnavailable, RootKeyIntegrityError
from apps.keystores.breaker import CircuitBreaker
from apps.keystores.software import SoftwareKeystore
from kms_project import metrics as exposition


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def gained(name: str, **labels: str) -> Callable[[], float]:
    before = sample(name, **labels)
    return lambda: sample(name, **labels) - before


def test_the_breaker_reports_when_it_opens_and_closes() -> None:
    now = [0.0]
    breaker = CircuitBreaker(
        failures=2, reset_after=10, clock=lambda: now[0], manager_id="manager-1"
    )
    opened = gained("kcm_key_manager_breaker_openings_total", manager_id="manager-1")

    def unreachable() -> None:
        raise KeystoreUnavailable("down")

    for _ in range(2):
        with pytest.raises(KeystoreUnavailable):
            breaker.call(unreachable)
    assert sample("kcm_key_manager_breaker_open", manager_id="manager-1") == 1
    assert opened() == 1

    now[0] = 11  # the trial call succeeds: closed again
    assert breaker.call(lambda: "answer") == "answer"
    assert sample("kcm_key_manager_breaker_open", manager_id="manager-1") == 0
    assert opened() == 1


def test_keystore_calls_are_timed_and_failures_counted_by_code(tmp_path: Path) -> None:
    keystore = SoftwareKeystore(path=tmp_path / "keys", allowed=True)
    timed = gained(
        "kcm_keystore_call_duration_seconds_count", keystore="software", operation="decrypt"
    )
    failed = gained(
        "kcm_keystore_call_errors_total",
        keystore="software", operation="decrypt", code=RootKeyIntegrityError.code,
    )  # fmt: skip
    handle = keystore.create_root_key(label="secret-label")
    blob = keystore.encrypt(handle, b"payload", b"aad")
    assert keystore.decrypt(handle, blob, b"aad") == b"payload"
    with pytest.raises(RootKeyIntegrityError):
        keystore.decrypt(handle, blob, b"other aad")
    assert (timed(), failed()) == (2, 1)


def test_the_key_cache_counts_hits_misses_and_each_kind_of_eviction() -> None:
    cache = KeyCache(ttl=300, max_entries=2)
    hits, misses = (
        gained("kcm_key_cache_hits_total", level="L3"),
        gained("kcm_key_cache_misses_total", level="L3"),
    )
    evicted = {
        reason: gained("kcm_key_cache_evictions_total", level="L3", reason=reason)
        for reason in ("expired", "capacity", "revoked")
    }
    cache.observe_epoch("t_one", 1)
    assert cache.get("t_one", "l3:payments") is None
    cache.put("t_one", "l3:payments", "key", 1)
    assert cache.get("t_one", "l3:payments") == "key"
    cache.put("t_one", "l3:a", "key", 1)
    cache.put("t_one", "l3:b", "key", 1)  # over the bound: the least recently used goes
    cache.observe_epoch("t_one", 2)  # a revocation: the tenant's keys go
    cache.ttl = -1
    cache.put("t_one", "l3:c", "key", 2)
    assert cache.get("t_one", "l3:c") is None  # expired
    assert (hits(), misses()) == (1, 2)
    assert {reason: count() for reason, count in evicted.items()} == {
        "expired": 1,
        "capacity": 1,
        "revoked": 2,
    }


def test_the_exposition_refuses_a_process_whose_metrics_no_scrape_would_see(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # prometheus-client is imported here, in per-process memory: too late to share files.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with pytest.raises(RuntimeError, match="imported before"):
        exposition.prepare_multiprocess("web")


def test_the_listener_is_off_unless_a_port_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KCM_METRICS_PORT", raising=False)
    assert exposition.listener_address() is None
    monkeypatch.setenv("KCM_METRICS_PORT", "9464")
    assert exposition.listener_address() == ("127.0.0.1", 9464)
    monkeypatch.setenv("KCM_METRICS_ADDRESS", "10.0.0.5")
    assert exposition.listener_address() == ("10.0.0.5", 9464)
