"""HYOK connectors: how KCM asks a customer's own key manager to wrap and unwrap its L2 keys.

The L1 never leaves the customer's key manager. A connector sends the L2 material (32 bytes)
and KCM's associated data to the external key and gets back AES-256-GCM ciphertext, and the
reverse; it never asks for key material. Every blob a connector returns is
``nonce (12) || ciphertext || tag (16)``, like the HSM provider's.

Connectors implemented: KMIP 1.4 (kmip.py) and PKCS#11 (pkcs11.py). The interface is what an
AWS XKS proxy (``POST .../keys/{id}/encrypt`` with ``additionalAuthenticatedData``, returning
``ciphertext``, ``initializationVector`` and ``authenticationTag``) or OpenBao Transit
(``aes256-gcm96`` keys with ``associated_data``) would implement too.

Failures are classified once, here, because KCM maps them to key states:
`ExternalUnreachable` → UNAVAILABLE, `ExternalRefused` → FORBIDDEN, `ExternalKeyGone` →
DESTROYED; `ExternalIntegrityError` (a blob that fails authentication) changes no state.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

KEY_BITS = 256
NONCE_BYTES = 12
TAG_BYTES = 16


class ExternalError(Exception):
    """A call to a customer's key manager failed. Messages never hold key material or secrets."""

    code = "external_error"


class ExternalUnreachable(ExternalError):
    """No answer: connection refused or reset, timeout, TLS failure, token not present."""

    code = "external_unreachable"


class ExternalRefused(ExternalError):
    """The key manager answered and refused: key revoked or deactivated, permission withdrawn,
    usage not allowed, login refused."""

    code = "external_refused"


class ExternalKeyGone(ExternalError):
    """The key manager answered that the key does not exist (any more)."""

    code = "external_key_gone"


class ExternalIntegrityError(ExternalError):
    """The key manager could not authenticate a blob: wrong key, wrong data, or tampered."""

    code = "external_integrity"


class ExternalConfigError(ExternalError):
    """The connection settings or credentials cannot work (bad PEM, missing field)."""

    code = "external_config"


@dataclass(frozen=True)
class ExternalKeyInfo:
    """What the key manager says about a key."""

    algorithm: str  # "AES" or what the manager calls it
    bits: int
    usable: bool  # active and allowed to encrypt and decrypt
    detail: str = ""


class KeyManagerConnector(abc.ABC):
    """One customer key manager. Thread-safe; calls are bounded by the connector's timeout."""

    kind: str

    @abc.abstractmethod
    def describe(self, key_id: str) -> ExternalKeyInfo:
        """The key's algorithm, size and usability. Raises `ExternalKeyGone` if it does not
        exist, `ExternalRefused` or `ExternalUnreachable`."""

    @abc.abstractmethod
    def encrypt(self, key_id: str, plaintext: bytes, aad: bytes) -> bytes:
        """AES-256-GCM under the external key; ``nonce || ciphertext || tag``."""

    @abc.abstractmethod
    def decrypt(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        """Authenticate and decrypt a blob made by `encrypt` with the same key and `aad`.
        Raises `ExternalIntegrityError` for a blob that fails authentication."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections (the connector may be used again: it reconnects)."""

    def abandon(self) -> None:  # noqa: B027 (most connectors hold nothing to abandon)
        """In a forked child: forget connections without closing them, since the parent process
        still uses the same sockets."""


class CircuitOpen(ExternalUnreachable):
    code = "external_circuit_open"


class CircuitBreaker:
    """Fail fast while a key manager is down.

    Closed: calls go through; `failures` unreachable errors in a row open it. Open: calls fail
    at once with `CircuitOpen` for `reset_after` seconds. Then one trial call goes through
    (half-open): success closes the breaker, failure opens it again. Only `ExternalUnreachable`
    counts: a refusal or a bad blob is an answer, and proves the manager is up.
    """

    def __init__(
        self, *, failures: int, reset_after: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
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
        except ExternalUnreachable:
            with self._lock:
                self._trial_running = False
                self._failures += 1
                if self._opened_at is not None or self._failures >= self.threshold:
                    self._opened_at = self._clock()
            raise
        except BaseException:
            with self._lock:
                self._trial_running = False
                self._failures, self._opened_at = 0, None
            raise
        with self._lock:
            self._trial_running = False
            self._failures, self._opened_at = 0, None
        return result

    def reset(self) -> None:
        with self._lock:
            self._failures, self._opened_at, self._trial_running = 0, None, False
