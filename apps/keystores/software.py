"""Development-only root keys in a local JSON file. No HSM protects them.

The file (``KCM_SOFTWARE_PROVIDER_FILE``) maps each handle to its label and raw AES-256 key,
is created with mode 0600, is replaced atomically on every change and is shared safely by
several processes through an ``fcntl.flock`` on a sibling ``.lock`` file. Destroying a key
removes it from the file; copies in backups or old disk blocks are not shredded.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings

from apps.keystores import software_import
from apps.keystores.base import (
    CAP_CREATE,
    CAP_DESTROY,
    CAP_SIGN,
    CAP_WRAP,
    NONCE_BYTES,
    WRAPPING_ALGORITHMS,
    CapabilityNotSupported,
    KeyCheck,
    Keystore,
    KeystoreUnavailable,
    RootKeyIntegrityError,
    RootKeyNotFound,
    import_capability,
    key_id_from_handle,
    measured,
    new_key_id,
    split_blob,
)

log = logging.getLogger(__name__)

_FORMAT_VERSION = 1
_KEY_BYTES = 32

# handle -> {"label": str, "key": base64 of the raw key}
Document = dict[str, dict[str, str]]


class SoftwareKeystore(Keystore):
    """AES-256-GCM root keys held in a file by this process: for development only."""

    name = "software"
    capabilities = frozenset(
        {CAP_CREATE, CAP_DESTROY, CAP_WRAP, CAP_SIGN}
        | {import_capability(algorithm) for algorithm in WRAPPING_ALGORITHMS}
    )

    def __init__(self, *, path: Path, allowed: bool) -> None:
        if not allowed:
            raise KeystoreUnavailable(
                "the software root-key provider is disabled (KCM_ALLOW_SOFTWARE_PROVIDER=false)"
            )
        log.warning(
            "SOFTWARE ROOT-KEY PROVIDER IN USE: root keys are NOT protected by an HSM; they sit "
            "in plain form in %s. Use it for development only.",
            path,
        )
        self._path = path
        self._lock_path = path.with_name(f"{path.name}.lock")
        self._lock = threading.Lock()
        self._document: Document = {}
        self._ciphers: dict[str, AESGCM] = {}
        self._stamp: tuple[int, int, int] | None = None

    @classmethod
    def from_settings(cls) -> SoftwareKeystore:
        return cls(
            path=Path(settings.KCM_SOFTWARE_PROVIDER_FILE),
            allowed=settings.KCM_ALLOW_SOFTWARE_PROVIDER,
        )

    # Operations.

    @measured("create_root_key")
    def create_root_key(self, *, label: str) -> str:
        handle = new_key_id().hex()
        key = base64.b64encode(os.urandom(_KEY_BYTES)).decode("ascii")

        def add(document: Document) -> None:
            document[handle] = {"label": label, "key": key}

        with self._lock:
            self._update(add)
        return handle

    @measured("encrypt")
    def encrypt(self, handle: str, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        with self._lock:
            cipher = self._cipher(handle)
        return nonce + cipher.encrypt(nonce, plaintext, aad)

    @measured("decrypt")
    def decrypt(self, handle: str, blob: bytes, aad: bytes) -> bytes:
        nonce, sealed = split_blob(blob)
        with self._lock:
            cipher = self._cipher(handle)
        try:
            return cipher.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise RootKeyIntegrityError("ciphertext failed authentication") from None

    def destroy(self, handle: str) -> None:
        key_id_from_handle(handle)

        def remove(document: Document) -> None:
            if document.pop(handle, None) is None:
                raise RootKeyNotFound("no root key with this handle")

        with self._lock:
            self._update(remove)

    def exists(self, handle: str) -> bool:
        with self._lock:
            self._refresh()
            return handle in self._document

    def health(self) -> dict[str, object]:
        report: dict[str, object] = {"keystore": self.name, "file": str(self._path)}
        try:
            with self._lock:
                self._refresh()
        except Exception as exc:  # health reports, it never raises
            return {"ok": False, **report, "error": str(exc)}
        return {"ok": True, **report}

    # Signing keys live in their own file beside the AES keys (PKCS#8 PEM, 0600).

    def create_signing_key(self, *, label: str) -> str:
        handle = new_key_id().hex()
        private = ec.generate_private_key(ec.SECP256R1())
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with self._lock:
            self._signing_path(handle).parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(
                self._signing_path(handle), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600
            )
            with os.fdopen(descriptor, "wb") as handle_file:
                handle_file.write(pem)
        return handle

    @measured("sign")
    def sign(self, handle: str, data: bytes) -> bytes:
        with self._lock:
            private = self._signing_key(handle)
        return private.sign(data, ec.ECDSA(hashes.SHA256()))

    def public_key_der(self, handle: str) -> bytes:
        with self._lock:
            private = self._signing_key(handle)
        return private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def _signing_path(self, handle: str) -> Path:
        key_id_from_handle(handle)
        return self._path.with_name(f"{self._path.name}.sign-{handle}.pem")

    def _signing_key(self, handle: str) -> ec.EllipticCurvePrivateKey:
        try:
            loaded = serialization.load_pem_private_key(
                self._signing_path(handle).read_bytes(), password=None
            )
        except FileNotFoundError:
            raise RootKeyNotFound("no signing key with this handle") from None
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        return loaded

    # BYOK: RSA wrapping keys live beside the AES keys (PKCS#8 PEM, 0600), like signing keys.

    def create_wrapping_key(self, *, label: str, bits: int) -> tuple[str, bytes]:
        handle = new_key_id().hex()
        pem, der = software_import.new_wrapping_key(bits)
        with self._lock:
            path = self._wrapping_path(handle)
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(pem)
        return handle, der

    def destroy_wrapping_key(self, handle: str) -> None:
        with self._lock:
            try:
                self._wrapping_path(handle).unlink()
            except FileNotFoundError:
                raise RootKeyNotFound("no wrapping key with this handle") from None

    def import_root_key(
        self, *, wrapping_handle: str, algorithm: str, wrapped: bytes, label: str
    ) -> str:
        if not self.supports(import_capability(algorithm)):
            raise CapabilityNotSupported(f"{self.name} cannot import {algorithm}")
        with self._lock:
            try:
                pem = self._wrapping_path(wrapping_handle).read_bytes()
            except FileNotFoundError:
                raise RootKeyNotFound("no wrapping key with this handle") from None
        material = software_import.unwrap_material(pem, algorithm, wrapped)
        handle = new_key_id().hex()
        key = base64.b64encode(material).decode("ascii")

        def add(document: Document) -> None:
            document[handle] = {"label": label, "key": key}

        with self._lock:
            self._update(add)
        return handle

    def key_check(self, handle: str) -> KeyCheck:
        with self._lock:
            self._cipher(handle)  # RootKeyNotFound unless it exists
            raw = base64.b64decode(self._document[handle]["key"])
        return software_import.key_check(raw)

    def _wrapping_path(self, handle: str) -> Path:
        key_id_from_handle(handle)
        return self._path.with_name(f"{self._path.name}.wrap-{handle}.pem")

    # Plumbing; callers hold self._lock.

    def _cipher(self, handle: str) -> AESGCM:
        key_id_from_handle(handle)
        self._refresh()
        if handle not in self._ciphers:
            # Created by another process within the file's timestamp resolution: look again.
            self._refresh(force=True)
        try:
            return self._ciphers[handle]
        except KeyError:
            raise RootKeyNotFound("no root key with this handle") from None

    def _refresh(self, *, force: bool = False) -> None:
        """Reload the file if another process (or object) changed it since we read it."""
        if force or self._current_stamp() != self._stamp:
            with self._file_lock(exclusive=False):
                self._load()

    def _update(self, change: Callable[[Document], None]) -> None:
        """Apply `change` to the latest file content and write the result atomically."""
        with self._file_lock(exclusive=True):
            self._load()
            document = dict(self._document)
            change(document)
            self._write(document)
            self._load()

    def _current_stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def _load(self) -> None:
        try:
            with open(self._path, "rb") as file:
                stat = os.fstat(file.fileno())
                raw = file.read()
        except FileNotFoundError:
            self._document, self._ciphers, self._stamp = {}, {}, None
            return
        except OSError as exc:
            raise KeystoreUnavailable(
                f"cannot read the software provider file {str(self._path)!r} ({exc.strerror})"
            ) from None
        document, ciphers = _parse(raw, self._path)
        self._document, self._ciphers = document, ciphers
        self._stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def _write(self, document: Document) -> None:
        content = json.dumps({"version": _FORMAT_VERSION, "keys": document}, indent=1)
        descriptor, temporary = tempfile.mkstemp(  # mode 0600
            dir=self._path.parent, prefix=f".{self._path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(descriptor, "w") as file:
                file.write(content)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self._path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    @contextlib.contextmanager
    def _file_lock(self, *, exclusive: bool) -> Iterator[None]:
        """Serialise against other processes using the same file."""
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(descriptor)


def _parse(raw: bytes, path: Path) -> tuple[Document, dict[str, AESGCM]]:
    corrupt = KeystoreUnavailable(f"the software provider file {str(path)!r} is corrupt")
    try:
        content = json.loads(raw)
        if content.get("version") != _FORMAT_VERSION:
            raise corrupt
        document: Document = {}
        ciphers: dict[str, AESGCM] = {}
        for handle, entry in content["keys"].items():
            key = base64.b64decode(entry["key"], validate=True)
            if len(key) != _KEY_BYTES:
                raise corrupt
            document[handle] = {"label": str(entry["label"]), "key": entry["key"]}
            ciphers[handle] = AESGCM(key)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise corrupt from None
    return document, ciphers
