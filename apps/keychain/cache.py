"""Per-process cache of unwrapped service keys (L3) and tenant keys (L2), and the kill switch.

Unwrapped keys live only in this process's memory, for at most KCM_KEY_CACHE_TTL_SECONDS and
at most KCM_KEY_CACHE_MAX_ENTRIES entries. Every key-chain change that may revoke access bumps
the tenant's `key_epoch` and NOTIFYs `kcm_keychain`; a listener thread in every process drops
that tenant's entries at once, and every request compares the epoch on the tenant row it has
loaded anyway with the cache's, so a missed notification costs at most one request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings

from apps.core import metrics
from apps.core.connections import dedicated_connection
from apps.core.forks import after_fork_in_child
from apps.keychain import crypto
from apps.keychain.crypto import ContextMemo

logger = logging.getLogger(__name__)

CHANNEL = "kcm_keychain"


@dataclass
class LoadedVersion:
    version: int
    row_id: int
    cipher: AESGCM
    ctx_key: bytes
    memo: ContextMemo  # canonical form, check and envelope headers of recent contexts

    @classmethod
    def of(
        cls, raw: bytes, *, tenant: UUID, key_id: UUID, version: int, row_id: int
    ) -> LoadedVersion:
        """An L3 version, from its raw key, ready to seal and open envelopes: the one way
        the chain (and the published envelope vectors) build one."""
        ctx_key = crypto.context_key(raw)
        prefixes = {
            kind: crypto.envelope_prefix(kind=kind, tenant=tenant, key_id=key_id, version=version)
            for kind in (crypto.KIND_DATA_KEY, crypto.KIND_PAYLOAD)
        }
        return cls(
            version=version,
            row_id=row_id,
            cipher=AESGCM(raw),
            ctx_key=ctx_key,
            memo=crypto.ContextMemo(ctx_key, prefixes),
        )


@dataclass
class LoadedServiceKey:
    """An enabled L3 whose chain was usable when loaded, with its enabled versions unwrapped."""

    schema: str
    key_id: UUID
    name: str
    tenant_uid: UUID
    primary: int
    versions: dict[int, LoadedVersion]
    epoch: int
    loaded_at: float = field(default_factory=time.monotonic)
    uses_left: int = 0  # encryptions reserved in the database and not yet spent
    lock: threading.Lock = field(default_factory=threading.Lock)


class KeyCache:
    def __init__(self, *, ttl: float, max_entries: int):
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[float, int, Any]] = OrderedDict()
        self._epochs: dict[str, int] = {}
        self._lock = threading.Lock()

    def observe_epoch(self, schema: str, epoch: int) -> None:
        """Called with the epoch a request or task saw; a newer one drops the tenant's keys."""
        with self._lock:
            if epoch > self._epochs.get(schema, -1):
                if schema in self._epochs:
                    self._drop_schema(schema)
                self._epochs[schema] = epoch

    def epoch_heard(self, schema: str) -> int:
        """The newest key epoch this process has heard of for `schema` (-1: none yet)."""
        return self._epochs.get(schema, -1)

    def get(self, schema: str, key: str) -> Any | None:
        with self._lock:
            item = self._entries.get((schema, key))
            if item is not None and time.monotonic() - item[0] > self.ttl:
                del self._entries[(schema, key)]
                _EVICTIONS[_level(key), "expired"].inc()
                item = None
            if item is None:
                _MISSES[_level(key)].inc()
                return None
            self._entries.move_to_end((schema, key))
        _HITS[_level(key)].inc()
        return item[2]

    def put(self, schema: str, key: str, value: Any, epoch: int) -> None:
        with self._lock:
            if epoch < self._epochs.get(schema, -1):
                return  # loaded before a revocation we have already heard of: do not keep
            self._entries[(schema, key)] = (time.monotonic(), epoch, value)
            self._entries.move_to_end((schema, key))
            while len(self._entries) > self.max_entries:
                (_schema, evicted), _item = self._entries.popitem(last=False)
                _EVICTIONS[_level(evicted), "capacity"].inc()

    def invalidate(self, schema: str, epoch: int | None = None) -> None:
        with self._lock:
            self._drop_schema(schema)
            if epoch is not None and epoch > self._epochs.get(schema, -1):
                self._epochs[schema] = epoch

    def clear(self) -> None:
        with self._lock:
            for _schema, key in self._entries:
                _EVICTIONS[_level(key), "flushed"].inc()
            self._entries.clear()

    def reset(self) -> None:
        """Forget entries and epochs (tests roll epochs back; production never does)."""
        with self._lock:
            self._entries.clear()
            self._epochs.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _drop_schema(self, schema: str) -> None:
        for cache_key in [k for k in self._entries if k[0] == schema]:
            del self._entries[cache_key]
            _EVICTIONS[_level(cache_key[1]), "revoked"].inc()


# Cache keys are "l2:<row id>" and "l3:<name>": the level is all a metric may say of them.
# Their labelled children are made once: a hit costs one dictionary lookup and one increment.
_LEVELS = {"l2": "L2", "l3": "L3"}


def _level(key: str) -> str:
    return _LEVELS.get(key[:2], "other")


_HITS = {level: metrics.KEY_CACHE_HITS.labels(level) for level in (*_LEVELS.values(), "other")}
_MISSES = {level: metrics.KEY_CACHE_MISSES.labels(level) for level in (*_LEVELS.values(), "other")}
_EVICTIONS = {
    (level, reason): metrics.KEY_CACHE_EVICTIONS.labels(level, reason)
    for level in (*_LEVELS.values(), "other")
    for reason in ("expired", "capacity", "revoked", "flushed")
}


class _ProcessState:
    cache: KeyCache | None = None
    listener: threading.Thread | None = None
    stop: threading.Event = threading.Event()


_state = _ProcessState()
_state_lock = threading.Lock()


@after_fork_in_child
def _forget_after_fork() -> None:
    # The parent's keys and listener thread are not this process's, nor its lock (another
    # thread may have held it at the fork): start afresh on first use.
    global _state_lock
    _state_lock = threading.Lock()
    _state.cache, _state.listener, _state.stop = None, None, threading.Event()


def key_cache() -> KeyCache:
    """This process's cache; created (and its listener started) lazily, again after a fork."""
    if _state.cache is None:
        with _state_lock:
            if _state.cache is None:
                _state.cache = KeyCache(
                    ttl=settings.KCM_KEY_CACHE_TTL_SECONDS,
                    max_entries=settings.KCM_KEY_CACHE_MAX_ENTRIES,
                )
                _state.listener = None
                if settings.KCM_KEY_CACHE_LISTEN:
                    _start_listener(_state.cache)
    assert _state.cache is not None
    return _state.cache


def stop_listener(timeout: float = 5.0) -> None:
    """Stop this process's listener (tests, and a clean shutdown)."""
    _state.stop.set()
    if _state.listener is not None:
        _state.listener.join(timeout)
    _state.listener = None
    _state.cache = None


def _start_listener(cache: KeyCache) -> None:
    _state.stop = threading.Event()
    thread = threading.Thread(
        target=_listen_forever,
        args=(cache, _state.stop),
        name="kcm-keychain-listener",
        daemon=True,
    )
    thread.start()
    _state.listener = thread


def _listen_forever(
    cache: KeyCache, stop: threading.Event, connect: Callable[[], Any] | None = None
) -> None:
    connect = connect or partial(
        dedicated_connection, application_name="kcm-keychain-listener", direct=True
    )
    backoff = 0.5
    while not stop.is_set():
        try:
            with connect() as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                # Anything may have changed while we were not listening.
                cache.clear()
                backoff = 0.5
                while not stop.is_set():
                    for notify in conn.notifies(timeout=1.0):
                        schema, _, epoch = notify.payload.partition(":")
                        cache.invalidate(schema, int(epoch) if epoch.isdigit() else None)
        except Exception as exc:
            cache.clear()
            logger.warning(
                "key-chain listener lost its connection (%s); retrying", type(exc).__name__
            )
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)
