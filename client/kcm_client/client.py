"""`Client`: envelope encryption with KCM's L4 data keys, in the message format of
docs/message-format.md. The data key comes from the server (`generate-data-key`) and goes back
to it to be unwrapped (`decrypt-data-key`); the data itself never leaves this process."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

import httpx
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import errors, message
from .admin import AdminMixin
from .cache import DataKeyCache
from .http import Transport

Context = Mapping[str, str] | None
Progress = Callable[[int], None]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _read_exact(src: IO[bytes], count: int) -> bytes:
    chunks, wanted = [], count
    while wanted:
        chunk = src.read(wanted)
        if not chunk:
            break
        chunks.append(chunk)
        wanted -= len(chunk)
    return b"".join(chunks)


class Client(AdminMixin):
    """A KCM tenant's API as a key user (and, for the CLI, a key admin or auditor).

    `cache` (a `DataKeyCache`) is opt-in: without one, every message gets a fresh data key and
    every decryption asks the server. `host_header` names the tenant when `base_url` is an
    address rather than the tenant's own domain.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        host_header: str | None = None,
        timeout: float = 30.0,
        retries: int = 4,
        cache: DataKeyCache | None = None,
        frame_size: int = message.DEFAULT_FRAME_SIZE,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api = Transport(
            base_url, token, host_header=host_header, timeout=timeout, retries=retries,
            transport=transport,
        )  # fmt: skip
        self.cache = cache
        self.frame_size = frame_size

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def server_calls(self) -> int:
        """HTTP requests sent so far (retries included)."""
        return self.api.calls

    # --- data keys -------------------------------------------------------------------------

    def _post(self, service_key: str, operation: str, body: dict[str, Any]) -> Any:
        try:
            return self.api.request(
                "POST", f"/api/v1/service-keys/{service_key}/{operation}/", body
            )
        except errors.KeyUnusable:
            if self.cache is not None:
                self.cache.clear()
            raise

    def generate_data_key(self, service_key: str, context: Context = None) -> tuple[bytes, bytes]:
        """A fresh data key: (plaintext key, its L4 envelope)."""
        reply = self._post(service_key, "generate-data-key", {"context": dict(context or {})})
        return base64.b64decode(reply["plaintext"]), base64.b64decode(reply["ciphertext"])

    def decrypt_data_key(self, service_key: str, envelope: bytes, context: Context = None) -> bytes:
        reply = self._post(
            service_key,
            "decrypt-data-key",
            {"ciphertext": _b64(envelope), "context": dict(context or {})},
        )
        return base64.b64decode(reply["plaintext"])

    def rewrap(self, envelope: bytes, *, service_key: str, context: Context = None) -> bytes:
        """A stored L4 envelope re-sealed under the service key's primary version."""
        reply = self._post(
            service_key, "rewrap", {"ciphertext": _b64(envelope), "context": dict(context or {})}
        )
        return base64.b64decode(reply["ciphertext"])

    def rewrap_many(
        self, envelopes: Sequence[bytes], *, service_key: str, context: Context = None
    ) -> list[bytes | errors.KcmError]:
        """`rewrap` for many envelopes in one request per 1,000; a failed item is its error."""
        items = [{"ciphertext": _b64(e), "context": dict(context or {})} for e in envelopes]
        return [
            base64.b64decode(r["ciphertext"]) if not isinstance(r, errors.KcmError) else r
            for r in self._batch(service_key, "rewrap", items)
        ]

    def _batch(
        self, service_key: str, operation: str, items: list[dict[str, Any]]
    ) -> list[dict[str, Any] | errors.KcmError]:
        out: list[dict[str, Any] | errors.KcmError] = []
        for start in range(0, len(items), 1000):
            reply = self._post(
                service_key, f"{operation}/batch", {"items": items[start : start + 1000]}
            )
            for result in sorted(reply["results"], key=lambda r: r["index"]):
                if result.get("ok"):
                    out.append(result)
                else:
                    out.append(errors.from_problem(400, result.get("error") or {}))
        return out

    # --- messages --------------------------------------------------------------------------

    def _encryption_key(
        self, service_key: str, context_json: bytes, size: int | None
    ) -> message.MessageKey:
        if self.cache is not None and size is not None:
            hit = self.cache.take_for_encrypt(service_key, context_json, size)
            if hit is not None:
                return hit
        return self._fresh_encryption_key(service_key, context_json, size)

    def _fresh_encryption_key(
        self, service_key: str, context_json: bytes, size: int | None
    ) -> message.MessageKey:
        data_key, envelope = self.generate_data_key(service_key, _context(context_json))
        key = message.MessageKey(
            data_key, service_key=service_key, envelope=envelope, context_json=context_json
        )
        if self.cache is not None and size is not None:
            self.cache.put_for_encrypt(service_key, context_json, key, size)
        return key

    def encrypt(
        self, data: bytes, *, service_key: str, context: Context = None,
        frame_size: int | None = None,
    ) -> bytes:  # fmt: skip
        """`data` as one KCM message under a data key of `service_key`, bound to `context`."""
        context_json = message.canonical_context(context)
        size = len(data)
        cache = self.cache
        key = None if cache is None else cache.take_for_encrypt(service_key, context_json, size)
        if key is None:
            key = self._fresh_encryption_key(service_key, context_json, size)
        return key.seal(data, frame_size or self.frame_size)

    def encrypt_many(
        self, items: Sequence[bytes], *, service_key: str, context: Context = None
    ) -> list[bytes]:
        """Many messages; without a cache, their data keys come in one batch request."""
        if self.cache is not None:
            return [self.encrypt(i, service_key=service_key, context=context) for i in items]
        body = {"context": dict(context or {})}
        context_json = message.canonical_context(context)
        keys = self._batch(service_key, "generate-data-key", [body] * len(items))
        out = []
        for data, key in zip(items, keys, strict=True):
            if isinstance(key, errors.KcmError):
                raise key
            sealing = message.MessageKey(
                base64.b64decode(key["plaintext"]), service_key=service_key,
                envelope=base64.b64decode(key["ciphertext"]), context_json=context_json,
            )  # fmt: skip
            out.append(sealing.seal(data, self.frame_size))
        return out

    def header(self, data: bytes | IO[bytes]) -> message.Header:
        """A message's header, read without any key (its tag is not checked)."""
        stream = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
        return message.header_read(stream.read)

    def _open_header(
        self, stream: IO[bytes], context: Context, data_key: bytes | None = None
    ) -> tuple[message.Header, AESGCM]:
        header = message.header_read(stream.read)
        if context is not None and message.canonical_context(context) != header.context_json:
            raise errors.ContextMismatch("the context given is not the message's")
        if data_key is None:
            data_key = self._decryption_key(header)
        return header, message.opener(header, data_key)

    def _decryption_key(self, header: message.Header) -> bytes:
        if self.cache is not None:
            hit = self.cache.get_for_decrypt(
                header.service_key, header.envelope, header.context_json
            )
            if hit is not None:
                return hit
        data_key = self.decrypt_data_key(header.service_key, header.envelope, header.context)
        if self.cache is not None:
            self.cache.put_for_decrypt(
                header.service_key, header.envelope, header.context_json, data_key
            )
        return data_key

    def decrypt(self, data: bytes, *, context: Context = None) -> bytes:
        """The plaintext of a whole message, returned only once every frame, the final one
        and the absence of trailing bytes are verified. `context`, if given, must equal the
        message's; without it the message's own context is used."""
        stream = io.BytesIO(data)
        header, keys = self._open_header(stream, context)
        return b"".join(part for part, _ in message.frames_open(stream.read, header, keys))

    def decrypt_many(
        self, messages: Sequence[bytes], *, context: Context = None
    ) -> list[bytes | errors.KcmError]:
        """Many messages, their data keys unwrapped in one batch request per service key."""
        headers: list[message.Header | errors.KcmError] = []
        for data in messages:
            try:
                headers.append(self.header(data))
            except errors.KcmError as exc:
                headers.append(exc)
        wanted: dict[str, list[message.Header]] = {}
        for h in headers:
            if isinstance(h, message.Header):
                wanted.setdefault(h.service_key, []).append(h)
        unwrapped: dict[tuple[str, bytes, bytes], bytes | errors.KcmError] = {}
        for name, group in wanted.items():
            items = [{"ciphertext": _b64(h.envelope), "context": h.context} for h in group]
            for h, result in zip(group, self._batch(name, "decrypt-data-key", items), strict=True):
                key = (
                    result
                    if isinstance(result, errors.KcmError)
                    else base64.b64decode(result["plaintext"])
                )
                unwrapped[(name, h.envelope, h.context_json)] = key
        out: list[bytes | errors.KcmError] = []
        for data, h in zip(messages, headers, strict=True):
            if isinstance(h, errors.KcmError):
                out.append(h)
                continue
            key = unwrapped[(h.service_key, h.envelope, h.context_json)]
            try:
                if isinstance(key, errors.KcmError):
                    raise key
                stream = io.BytesIO(data)
                header, keys = self._open_header(stream, context, key)
                out.append(b"".join(p for p, _ in message.frames_open(stream.read, header, keys)))
            except errors.KcmError as exc:
                out.append(exc)
        return out

    def encrypt_stream(
        self, src: IO[bytes], dst: IO[bytes], *, service_key: str, context: Context = None,
        frame_size: int | None = None, progress: Progress | None = None,
    ) -> int:  # fmt: skip
        """Encrypt `src` to `dst` in constant memory (a fresh data key: streams bypass the
        cache, whose byte limit needs the size up front); returns the plaintext size."""
        key = self._encryption_key(service_key, message.canonical_context(context), None)
        header, sealer = key.start(frame_size or self.frame_size)
        dst.write(header)
        total = 0
        chunk = _read_exact(src, sealer.frame_size)
        while True:
            following = (
                _read_exact(src, sealer.frame_size) if len(chunk) == sealer.frame_size else b""
            )
            total += len(chunk)
            if following:
                dst.write(sealer.regular(chunk))
            else:
                dst.write(sealer.final(chunk))
                if progress:
                    progress(len(chunk))
                return total
            if progress:
                progress(len(chunk))
            chunk = following

    def decrypt_stream(
        self, src: IO[bytes], dst: IO[bytes], *, context: Context = None,
        progress: Progress | None = None,
    ) -> int:  # fmt: skip
        """Decrypt `src` to `dst` in constant memory. Each regular frame is written once its
        own tag verifies, before the rest of the message is read: on an error, discard what
        was written. The final frame is written only after nothing is found to follow it."""
        header, keys = self._open_header(src, context)
        total = 0
        for part, _ in message.frames_open(src.read, header, keys):
            dst.write(part)
            total += len(part)
            if progress:
                progress(len(part))
        return total


def _context(context_json: bytes) -> dict[str, str]:
    import json

    loaded: dict[str, str] = json.loads(context_json)
    return loaded
