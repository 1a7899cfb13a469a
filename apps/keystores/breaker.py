"""A circuit breaker for keystores reached over a network or another token (HYOK): fail fast
while a customer's key manager is down, instead of making every request wait for a timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from apps.core import metrics
from apps.keystores.base import CircuitOpen, KeystoreUnavailable

T = TypeVar("T")


class CircuitBreaker:
    """Fail fast while a key manager is down.

    Closed: calls go through; `failures` unreachable errors in a row open it. Open: calls fail
    at once with `CircuitOpen` for `reset_after` seconds. Then one trial call goes through
    (half-open): success closes the breaker, failure opens it again. Only `KeystoreUnavailable`
    counts: a refusal or a bad blob is an answer, and proves the manager is up.

    `manager_id` (an id, never a name) labels its metrics: whether it is open, and how often
    it opened.
    """

    def __init__(
        self,
        *,
        failures: int,
        reset_after: float,
        clock: Callable[[], float] = time.monotonic,
        manager_id: str = metrics.UNKNOWN,
    ) -> None:
        self._open_gauge = metrics.BREAKER_OPEN.labels(manager_id)
        self._openings = metrics.BREAKER_OPENINGS.labels(manager_id)
        self._open_gauge.set(0)
        self.threshold = failures
        self.reset_after = reset_after
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._opened_at is not None

    def call(self, operation: Callable[[], T]) -> T:
        with self._lock:
            if self._opened_at is not None:
                waited = self._clock() - self._opened_at
                if waited < self.reset_after or self._trial_running:
                    raise CircuitOpen(
                        "the key manager failed repeatedly; not calling it for "
                        f"{max(0.0, self.reset_after - waited):.1f} s more"
                    )
                self._trial_running = True
        try:
            result = operation()
        except KeystoreUnavailable:
            with self._lock:
                self._trial_running = False
                self._failures += 1
                if self._opened_at is not None or self._failures >= self.threshold:
                    self._opened_at = self._clock()
                    self._open_gauge.set(1)
                    self._openings.inc()
            raise
        except BaseException:
            self._close()
            raise
        self._close()
        return result

    def _close(self) -> None:
        with self._lock:
            was_open = self._opened_at is not None
            self._trial_running = False
            self._failures, self._opened_at = 0, None
            if was_open:
                self._open_gauge.set(0)

    def reset(self) -> None:
        self._close()
