"""Root keys in a PKCS#11 token through python-pkcs11 (SoftHSM2 in development and tests).

Process model (see docs HSM-NOTES): the library is initialised lazily in the process that uses
it, never before a fork; a child re-initialises on first use. Every PKCS#11 call of the process
runs under one lock, because python-pkcs11 initialises the library without
CKF_OS_LOCKING_OK and SoftHSM then crashes when two threads use it at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import pkcs11
from django.conf import settings
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.util.ec import (
    encode_ec_public_key,
    encode_ecdsa_signature,
    encode_named_curve_parameters,
)

from apps.keychain.providers import pkcs11_import
from apps.keychain.providers.base import (
    CAP_AES_GCM,
    CAP_DESTROY,
    CAP_GENERATE,
    CAP_SIGN,
    NONCE_BYTES,
    WRAPPING_KEY_BITS,
    CapabilityNotSupported,
    KeyCheck,
    ProviderError,
    ProviderUnavailable,
    RootKeyIntegrityError,
    RootKeyNotFound,
    RootKeyProvider,
    import_capability,
    key_id_from_handle,
    new_key_id,
    split_blob,
)

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as Library

log = logging.getLogger(__name__)

T = TypeVar("T")

# The session or the whole library is gone: re-initialising once may help.
_LOST_SESSION = (
    p11.SessionHandleInvalid,
    p11.SessionClosed,
    p11.DeviceRemoved,
    p11.DeviceError,
    p11.TokenNotPresent,
    p11.TokenNotRecognised,
    p11.UserNotLoggedIn,
)
# A failed GCM tag check: SoftHSM reports GeneralError, other tokens the standard codes.
_BAD_CIPHERTEXT = (p11.GeneralError, p11.EncryptedDataInvalid, p11.EncryptedDataLenRange)
# Our cached object handle no longer names an object (destroyed by another session or process).
_STALE_OBJECT = (p11.ObjectHandleInvalid, p11.KeyHandleInvalid)
# A login that may succeed when retried: SoftHSM's file backend races when many processes start.
_LOGIN_RACE = (p11.NoSuchToken, p11.GeneralError)
_LOGIN_ATTEMPTS = 5
_LOGIN_BACKOFF_SECONDS = 0.05

_ROOT_KEY_TEMPLATE = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.MODIFIABLE: False,
    Attribute.ENCRYPT: True,
    Attribute.DECRYPT: True,
    Attribute.WRAP: False,
    Attribute.UNWRAP: False,
    Attribute.SIGN: False,
    Attribute.VERIFY: False,
    Attribute.DERIVE: False,
}


class TokenNotFound(ProviderUnavailable):
    """No token with the configured label (not present, or created after C_Initialize)."""


class LoginRefused(ProviderUnavailable):
    """The token refused the PIN (wrong, locked or invalid)."""


def _is_lost_session(exc: p11.PKCS11Error) -> bool:
    # python-pkcs11 has no class for CKR_CRYPTOKI_NOT_INITIALIZED, only this message.
    return isinstance(exc, _LOST_SESSION) or (
        type(exc) is p11.PKCS11Error and "not initialized" in str(exc)
    )


class _AesKey(Protocol):
    def encrypt(self, data: bytes, **kwargs: Any) -> bytes | Iterator[bytes]: ...
    def decrypt(self, data: bytes, **kwargs: Any) -> bytes | Iterator[bytes]: ...
    def destroy(self) -> None: ...


class _Process:
    """PKCS#11 state shared by every provider object of this process.

    `generation` grows on every (re-)initialisation of the library; a session opened in an older
    generation is dead. `pid` is the process that initialised it.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid: int | None = None
        self.generation = 0


_process = _Process()


def _after_fork_in_child() -> None:
    # The parent's lock may have been held by a thread that does not exist here, and the
    # inherited sessions must not be used: mark them stale so the next call re-initialises.
    _process.lock = threading.Lock()
    _process.pid = None


os.register_at_fork(after_in_child=_after_fork_in_child)


class Pkcs11Provider(RootKeyProvider):
    """Root keys as non-extractable AES-256 token objects; the handle is the hex CKA_ID."""

    name = "pkcs11"
    capabilities = frozenset({CAP_GENERATE, CAP_DESTROY, CAP_AES_GCM, CAP_SIGN})

    def __init__(
        self,
        *,
        library: str,
        token_label: str,
        pin: str | None,
        timeout: float,
        oaep_sha256: bool = False,
    ) -> None:
        if not pin:
            raise ProviderUnavailable(
                "no PKCS#11 user PIN configured: set KCM_PKCS11_PIN or KCM_PKCS11_PIN_FILE"
            )
        self._library_path = library
        self._token_label = token_label
        self._pin = pin
        self._timeout = timeout
        self._session: pkcs11.Session | None = None
        self._generation = -1
        self._keys: dict[str, _AesKey] = {}
        # SHA-1 OAEP and AES key wrap with padding are universal; SHA-256 OAEP cannot be probed
        # through the mechanism list (SoftHSM2 lists OAEP and then refuses SHA-256 with
        # ArgumentsBad), so the operator declares it (KCM_PKCS11_OAEP_SHA256).
        hashes = ("SHA_1", "SHA_256") if oaep_sha256 else ("SHA_1",)
        self.capabilities = self.capabilities | {
            import_capability(f"{scheme}_{digest}")
            for scheme in ("RSAES_OAEP", "RSA_AES_KEY_WRAP")
            for digest in hashes
        }

    @classmethod
    def from_settings(cls) -> Pkcs11Provider:
        return cls(
            library=settings.KCM_PKCS11_LIBRARY,
            token_label=settings.KCM_PKCS11_TOKEN_LABEL,
            pin=settings.KCM_PKCS11_PIN,
            timeout=settings.KCM_PKCS11_TIMEOUT_SECONDS,
            oaep_sha256=settings.KCM_PKCS11_OAEP_SHA256,
        )

    # Operations.

    def create_root_key(self, *, label: str) -> str:
        key_id = new_key_id()
        handle = key_id.hex()

        def generate(session: pkcs11.Session) -> None:
            self.calls += 1
            key = session.generate_key(
                KeyType.AES, 256, id=key_id, label=label, store=True, template=_ROOT_KEY_TEMPLATE
            )
            self._keys[handle] = cast(_AesKey, key)

        self._run(generate)
        log.info("PKCS#11 root key created (handle %s, token %s)", handle, self._token_label)
        return handle

    def encrypt(self, handle: str, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        params = pkcs11.GCMParams(nonce, aad)

        def encrypt(key: _AesKey) -> bytes:
            self.calls += 1
            return _as_bytes(
                key.encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=params)
            )

        return nonce + self._with_key(handle, encrypt)

    def decrypt(self, handle: str, blob: bytes, aad: bytes) -> bytes:
        nonce, sealed = split_blob(blob)
        params = pkcs11.GCMParams(nonce, aad)

        def decrypt(key: _AesKey) -> bytes:
            self.calls += 1
            try:
                return _as_bytes(
                    key.decrypt(sealed, mechanism=Mechanism.AES_GCM, mechanism_param=params)
                )
            except _BAD_CIPHERTEXT:
                # A failed C_Decrypt ends the operation; the session stays usable.
                raise RootKeyIntegrityError("ciphertext failed authentication") from None

        return self._with_key(handle, decrypt)

    def destroy(self, handle: str) -> None:
        key_id = key_id_from_handle(handle)

        def destroy(session: pkcs11.Session) -> None:
            self._keys.pop(handle, None)
            key = self._find(session, key_id)
            if key is None:
                raise RootKeyNotFound("no root key with this handle")
            self.calls += 1
            key.destroy()

        self._run(destroy)
        log.info("PKCS#11 root key destroyed (handle %s, token %s)", handle, self._token_label)

    def exists(self, handle: str) -> bool:
        try:
            key_id = key_id_from_handle(handle)
        except RootKeyNotFound:
            return False
        return self._run(lambda session: self._find(session, key_id) is not None)

    def health(self) -> dict[str, object]:
        report: dict[str, object] = {"provider": self.name, "token": self._token_label}

        def probe(session: pkcs11.Session) -> None:
            self.calls += 1
            session.generate_random(64)

        try:
            self._run(probe)
        except Exception as exc:  # health reports, it never raises
            return {"ok": False, **report, "error": str(exc)}
        return {"ok": True, **report}

    # Signing: an EC P-256 pair; the private key is sensitive, non-extractable, sign-only.

    def create_signing_key(self, *, label: str) -> str:
        key_id = new_key_id()
        curve = encode_named_curve_parameters("secp256r1")

        def generate(session: pkcs11.Session) -> None:
            self.calls += 1
            params = session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: curve}, local=True
            )
            params.generate_keypair(
                store=True,
                id=key_id,
                label=label,
                public_template={Attribute.VERIFY: True, Attribute.TOKEN: True},
                private_template={
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.SIGN: True,
                    Attribute.DECRYPT: False,
                    Attribute.UNWRAP: False,
                    Attribute.DERIVE: False,
                },
            )

        self._run(generate)
        return key_id.hex()

    def sign(self, handle: str, data: bytes) -> bytes:
        key_id = key_id_from_handle(handle)
        digest = hashlib.sha256(data).digest()

        def sign(session: pkcs11.Session) -> bytes:
            self.calls += 1
            try:
                key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id)
            except p11.NoSuchKey:
                raise RootKeyNotFound("no signing key with this handle") from None
            raw = key.sign(digest, mechanism=Mechanism.ECDSA)  # type: ignore[attr-defined]
            return bytes(encode_ecdsa_signature(raw))

        return self._run(sign)

    def public_key_der(self, handle: str) -> bytes:
        key_id = key_id_from_handle(handle)

        def export(session: pkcs11.Session) -> bytes:
            self.calls += 1
            try:
                key = session.get_key(object_class=ObjectClass.PUBLIC_KEY, id=key_id)
            except p11.NoSuchKey:
                raise RootKeyNotFound("no signing key with this handle") from None
            return bytes(encode_ec_public_key(cast(pkcs11.PublicKey, key)))

        return self._run(export)

    # BYOK: see pkcs11_import.py.

    def create_wrapping_key(self, *, label: str, bits: int) -> tuple[str, bytes]:
        if bits not in WRAPPING_KEY_BITS:
            raise ProviderError(f"wrapping keys are {WRAPPING_KEY_BITS} bits, not {bits}")
        key_id = new_key_id()

        def generate(session: pkcs11.Session) -> bytes:
            self.calls += 1
            return pkcs11_import.generate_wrapping_pair(
                session, key_id=key_id, label=label, bits=bits
            )

        return key_id.hex(), self._run(generate)

    def destroy_wrapping_key(self, handle: str) -> None:
        key_id = key_id_from_handle(handle)

        def destroy(session: pkcs11.Session) -> None:
            self.calls += 1
            pkcs11_import.destroy_wrapping_pair(session, key_id)

        self._run(destroy)

    def import_root_key(
        self, *, wrapping_handle: str, algorithm: str, wrapped: bytes, label: str
    ) -> str:
        if not self.supports(import_capability(algorithm)):
            raise CapabilityNotSupported(f"this HSM cannot import {algorithm}")
        wrapping_id = key_id_from_handle(wrapping_handle)
        key_id = new_key_id()
        handle = key_id.hex()

        def unwrap(session: pkcs11.Session) -> None:
            self.calls += 1
            key = pkcs11_import.unwrap_root_key(
                session,
                wrapping_id=wrapping_id,
                algorithm=algorithm,
                wrapped=wrapped,
                new_id=key_id,
                label=label,
                template=_ROOT_KEY_TEMPLATE,
            )
            self._keys[handle] = cast(_AesKey, key)

        self._run(unwrap)
        log.info("PKCS#11 root key imported (handle %s, token %s)", handle, self._token_label)
        return handle

    def key_check(self, handle: str) -> KeyCheck:
        def check(key: _AesKey) -> KeyCheck:
            self.calls += 1
            return pkcs11_import.key_check(key)

        return self._with_key(handle, check)

    def call(self, operation: Callable[[pkcs11.Session], T], *, restart: bool = False) -> T:
        """Run `operation` with this object's logged-in session under the process-wide PKCS#11
        lock: how code that talks to another token of the same library (a HYOK connector)
        stays serialised with everything else. `restart` re-initialises the library first
        (tokens created after C_Initialize are invisible until then)."""
        if restart:
            lock = _process.lock
            if not lock.acquire(timeout=self._timeout):
                raise ProviderUnavailable(
                    f"timed out after {self._timeout:g} s waiting for the PKCS#11 lock"
                )
            try:
                self._connect(restart=True)
            except p11.PKCS11Error as exc:
                raise _unavailable(exc) from None
            finally:
                lock.release()
        return self._run(operation)

    # Plumbing.

    def _with_key(self, handle: str, use: Callable[[_AesKey], T]) -> T:
        """Run `use` on the key object for `handle`, from the per-process cache when possible."""
        key_id = key_id_from_handle(handle)

        def operation(session: pkcs11.Session) -> T:
            key = self._keys.get(handle)
            if key is not None:
                try:
                    return use(key)
                except _STALE_OBJECT:
                    del self._keys[handle]
            key = self._find(session, key_id)
            if key is None:
                raise RootKeyNotFound("no root key with this handle")
            self._keys[handle] = key
            return use(key)

        return self._run(operation)

    def _find(self, session: pkcs11.Session, key_id: bytes) -> _AesKey | None:
        self.calls += 1
        try:
            key = session.get_key(object_class=ObjectClass.SECRET_KEY, id=key_id)
        except p11.NoSuchKey:
            return None
        return cast(_AesKey, key)

    def _run(self, operation: Callable[[pkcs11.Session], T]) -> T:
        """Run one operation under the process lock; re-initialise and retry once if the session
        was lost. PKCS#11 errors leave as `ProviderError`s."""
        lock = _process.lock
        if not lock.acquire(timeout=self._timeout):
            raise ProviderUnavailable(
                f"timed out after {self._timeout:g} s waiting for the PKCS#11 lock"
            )
        try:
            try:
                return operation(self._connect(restart=False))
            except p11.PKCS11Error as exc:
                if not _is_lost_session(exc):
                    raise _unavailable(exc) from None
                log.warning("PKCS#11 session lost (%s); re-initialising", type(exc).__name__)
            try:
                return operation(self._connect(restart=True))
            except p11.PKCS11Error as exc:
                raise _unavailable(exc) from None
        finally:
            lock.release()

    def _connect(self, *, restart: bool) -> pkcs11.Session:
        """This object's logged-in session, (re-)initialising the library when needed.

        Caller holds the process lock.
        """
        try:
            lib = pkcs11.lib(self._library_path)
        except p11.PKCS11Error:
            raise ProviderUnavailable(
                f"cannot load the PKCS#11 library {self._library_path!r}"
            ) from None
        if restart or _process.pid != os.getpid():
            # In a forked child the library state is the parent's: finalise it (which fails
            # harmlessly if it is not initialised here) and start afresh.
            with contextlib.suppress(p11.PKCS11Error):
                lib.finalize()
            lib.initialize()
            _process.pid = os.getpid()
            _process.generation += 1
        if self._session is None or self._generation != _process.generation:
            self._keys.clear()
            self._session = self._login(lib)
            self._generation = _process.generation
        return self._session

    def _login(self, lib: Library) -> pkcs11.Session:
        for attempt in range(1, _LOGIN_ATTEMPTS + 1):
            try:
                token = find_token(lib, self._token_label)
                try:
                    return token.open(rw=True, user_pin=self._pin)
                except p11.UserAlreadyLoggedIn:
                    # Login is per process and another session of ours already did it (the
                    # token did not check the PIN then). python-pkcs11 leaves the session of
                    # the refused login open; it is closed at the next C_Finalize.
                    return token.open(rw=True)
            except _LOGIN_RACE as exc:
                if attempt == _LOGIN_ATTEMPTS:
                    missing = isinstance(exc, p11.NoSuchToken)
                    raise (TokenNotFound if missing else ProviderUnavailable)(
                        f"PKCS#11 token {self._token_label!r} not available "
                        f"({type(exc).__name__} after {attempt} attempts)"
                    ) from None
                time.sleep(_LOGIN_BACKOFF_SECONDS * 2 ** (attempt - 1))
            except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange, p11.PinLocked) as exc:
                raise LoginRefused(
                    f"PKCS#11 login to token {self._token_label!r} refused "
                    f"({type(exc).__name__}): check KCM_PKCS11_PIN / KCM_PKCS11_PIN_FILE"
                ) from None
        raise AssertionError("unreachable")


def find_token(lib: Library, label: str) -> pkcs11.Token:
    """The token labelled `label`. Unlike python-pkcs11's `lib.get_token`, a slot that fails to
    answer is skipped, not fatal: with SoftHSM2, a token of the same library whose storage
    vanished (a customer's, say) makes C_GetTokenInfo fail on its slot until re-initialisation,
    and must not lock everyone else out."""
    for slot in lib.get_slots(token_present=True):
        try:
            token = slot.get_token()
        except p11.PKCS11Error:
            continue
        if token.label == label:
            return token
    raise p11.NoSuchToken(f"no token labelled {label!r}")


def _as_bytes(result: bytes | Iterator[bytes]) -> bytes:
    assert isinstance(result, bytes)  # single-part operations return bytes
    return result


def _unavailable(exc: p11.PKCS11Error) -> ProviderUnavailable:
    # Name the failure only: python-pkcs11 messages may echo templates or arguments.
    return ProviderUnavailable(f"PKCS#11 operation failed ({type(exc).__name__})")
