"""Opt-in data-key caching, like the AWS Encryption SDK's caching materials manager.

Encrypting reuses one data key per (service key, context) for at most `max_messages`
messages, `max_age` seconds and `max_bytes` bytes of plaintext, whichever comes first.
Decrypting remembers the data key of each (service key, envelope, context) for `max_age`
seconds. A `KeyUnusable` answer from the server (key_disabled, key_destroyed, ...) clears
both, so a disabled key stops working here at the next fetch rather than at expiry.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from .message import MessageKey

_monotonic = time.monotonic


@dataclass(slots=True)
class _Entry:
    key: MessageKey  # the data key's AES-GCM, header and message counter, made once
    expires: float  # time.monotonic() after which it encrypts no more
    messages: int = 0
    bytes: int = 0


class DataKeyCache:
    def __init__(
        self,
        *,
        max_messages: int = 4096,
        max_age: float = 300.0,
        max_bytes: int = 2**32,
        max_entries: int = 1000,
    ) -> None:
        if max_messages < 1 or max_age <= 0 or max_bytes < 1 or max_entries < 1:
            raise ValueError("cache limits must be positive")
        self.max_messages = max_messages
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._encrypt: dict[tuple[str, bytes], _Entry] = {}
        self._decrypt: dict[tuple[str, bytes, bytes], tuple[bytes, float]] = {}

    def take_for_encrypt(self, service_key: str, context: bytes, size: int) -> MessageKey | None:
        """A cached data key that may encrypt `size` more bytes, counted as used."""
        with self._lock:
            entry = self._encrypt.get((service_key, context))
            if entry is None:
                return None
            entry.messages += 1
            entry.bytes += size
            if (
                entry.messages <= self.max_messages
                and entry.bytes <= self.max_bytes
                and _monotonic() < entry.expires
            ):
                return entry.key
            del self._encrypt[(service_key, context)]  # spent: the next message gets a new one
            return None

    def put_for_encrypt(self, service_key: str, context: bytes, key: MessageKey, size: int) -> None:
        """Cache a fresh data key that has just encrypted one message of `size` bytes."""
        if size > self.max_bytes:
            return
        entry = _Entry(key, time.monotonic() + self.max_age, messages=1, bytes=size)
        with self._lock:
            self._evict(self._encrypt)
            self._encrypt[(service_key, context)] = entry

    def get_for_decrypt(self, service_key: str, envelope: bytes, context: bytes) -> bytes | None:
        with self._lock:
            hit = self._decrypt.get((service_key, envelope, context))
            if hit is None:
                return None
            if time.monotonic() - hit[1] >= self.max_age:
                del self._decrypt[(service_key, envelope, context)]
                return None
            return hit[0]

    def put_for_decrypt(
        self, service_key: str, envelope: bytes, context: bytes, data_key: bytes
    ) -> None:
        with self._lock:
            self._evict(self._decrypt)
            self._decrypt[(service_key, envelope, context)] = (data_key, time.monotonic())

    def clear(self) -> None:
        with self._lock:
            self._encrypt.clear()
            self._decrypt.clear()

    def __len__(self) -> int:
        return len(self._encrypt) + len(self._decrypt)

    def _evict(self, entries: dict[Any, Any]) -> None:
        while len(entries) >= self.max_entries:
            del entries[next(iter(entries))]  # the oldest inserted
