"""HYOK over PKCS#11: a key in the customer's own token (its own label and PIN).

The customer's token may sit behind the same PKCS#11 library as the platform's HSM (several
partitions of one appliance; in tests, a second SoftHSM2 token). Every call goes through
`TokenSession.run`, so it runs under the one process-wide PKCS#11 lock, with the same lazy
initialisation after fork and re-login after a lost session as the platform's own keys.

The external key is named by its CKA_LABEL, or ``id:<hex>`` for its CKA_ID. The keystore
never reads key material: it finds the key and runs C_Encrypt/C_Decrypt with CKM_AES_GCM.

A tenant names a library and a token label, so the keystore makes sure that it is the tenant's
token and PIN: the PIN is checked even when this process is logged in to the token already
(`TokenSession`), the platform's own token is refused, and each token (library and serial)
serves one owner only (`claims.token_claim`), checked before the first operation of each
session.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pkcs11
from django.conf import settings
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from apps.keystores.base import (
    CAP_SYNC,
    CAP_WRAP,
    NONCE_BYTES,
    TAG_BYTES,
    KeyInfo,
    Keystore,
    KeystoreConfigError,
    KeystoreRefused,
    KeystoreUnavailable,
    RootKeyIntegrityError,
    RootKeyNotFound,
    measured,
)
from apps.keystores.claims import token_claim, token_identity
from apps.keystores.pkcs11.aes import NonceNotHonoured
from apps.keystores.pkcs11.session import (
    LoginRefused,
    TokenNotFound,
    TokenSession,
    find_token,
    library_generation,
)

T = TypeVar("T")

# CKR_KEY_FUNCTION_NOT_PERMITTED: python-pkcs11 0.10 has no class for it.
_KEY_FUNCTION_NOT_PERMITTED = 0x68
# A token created after C_Initialize is only seen after re-initialising the library, which
# costs every session of the process; so at most this often.
_RESTART_INTERVAL_SECONDS = 1.0
_restart_lock = threading.Lock()
_last_restart = [-_RESTART_INTERVAL_SECONDS]


class ExternalPkcs11Keystore(Keystore):
    name = "external-pkcs11"
    capabilities = frozenset({CAP_WRAP, CAP_SYNC})

    def __init__(
        self, *, library: str, token_label: str, pin: str, timeout: float, owner: str
    ) -> None:
        if not pin:
            raise KeystoreConfigError("the token's PIN is missing")
        self._token_label = token_label
        self._library = library
        self._owner = owner
        self._claimed: bytes | None = None
        self._restart_next = False
        # One login attempt: `_call` retries a token that cannot be used once, re-initialising
        # the library at most once a second, and the breaker stops calls to a token that stays
        # gone. The login's own retries (for SoftHSM2's start-up race) re-initialised it four
        # more times per call, pausing 0.75 s under the process-wide lock.
        self._session = TokenSession(
            library=library, token_label=token_label, pin=pin, timeout=timeout, login_attempts=1
        )
        self._session.check_token = lambda lib, token: _refuse_platform_token(lib, token, library)

    @measured("describe")
    def describe(self, key_id: str) -> KeyInfo:
        def describe(session: pkcs11.Session) -> KeyInfo:
            key = self._find(session, key_id)
            key_type = key[Attribute.KEY_TYPE]
            bits = int(key[Attribute.VALUE_LEN] or 0) * 8
            problems = [
                f"it cannot {use}"
                for use, attribute in (
                    ("encrypt", Attribute.ENCRYPT),
                    ("decrypt", Attribute.DECRYPT),
                )
                if not key[attribute]
            ]
            return KeyInfo(
                algorithm="AES" if key_type == KeyType.AES else getattr(key_type, "name", "?"),
                bits=bits,
                usable=not problems,
                detail="; ".join(problems),
            )

        return self._call(describe)

    @measured("encrypt")
    def encrypt(self, key_id: str, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)

        def encrypt(session: pkcs11.Session) -> bytes:
            key = self._usable(session, key_id, Attribute.ENCRYPT)
            sealed = bytes(
                _permitted(
                    lambda: key.encrypt(
                        plaintext,
                        mechanism=Mechanism.AES_GCM,
                        mechanism_param=pkcs11.GCMParams(nonce, aad),
                    )
                )
            )
            # As for the platform's HSM (aes.gcm_seal_verified): a token that used an IV of its
            # own would leave a blob that never opens; open it before anyone stores it.
            try:
                opened = key.decrypt(
                    sealed,
                    mechanism=Mechanism.AES_GCM,
                    mechanism_param=pkcs11.GCMParams(nonce, aad),
                )
            except (p11.GeneralError, p11.EncryptedDataInvalid, p11.EncryptedDataLenRange):
                opened = None
            if opened is None or bytes(opened) != plaintext:
                raise NonceNotHonoured(
                    "the token's AES-GCM output does not open with the nonce given (does it "
                    "generate its own IV?)"
                )
            return nonce + sealed

        return self._call(encrypt)

    @measured("decrypt")
    def decrypt(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise RootKeyIntegrityError("the wrapped key is too short")

        def decrypt(session: pkcs11.Session) -> bytes:
            key = self._usable(session, key_id, Attribute.DECRYPT)
            try:
                opened = _permitted(
                    lambda: key.decrypt(
                        blob[NONCE_BYTES:],
                        mechanism=Mechanism.AES_GCM,
                        mechanism_param=pkcs11.GCMParams(blob[:NONCE_BYTES], aad),
                    )
                )
            except (p11.GeneralError, p11.EncryptedDataInvalid, p11.EncryptedDataLenRange):
                raise RootKeyIntegrityError("the token could not authenticate the blob") from None
            return bytes(opened)

        return self._call(decrypt)

    def health(self) -> dict[str, object]:
        report: dict[str, object] = {"keystore": self.name, "token": self._token_label}
        try:
            self._call(lambda session: None)
        except Exception as exc:  # health reports, it never raises
            return {"ok": False, **report, "error": str(exc)}
        return {"ok": True, **report}

    def close(self) -> None:
        """Sessions belong to the process (see Pkcs11Keystore); nothing to release here."""

    # Plumbing: runs inside TokenSession.run, under the process-wide lock.

    def _usable(self, session: pkcs11.Session, key_id: str, use: Attribute) -> Any:
        key = self._find(session, key_id)
        if not key[use]:
            raise KeystoreRefused(f"the key may not {use.name.lower()} any more")
        return key

    def _find(self, session: pkcs11.Session, key_id: str) -> Any:
        template: dict[Attribute, Any] = {Attribute.CLASS: ObjectClass.SECRET_KEY}
        if key_id.startswith("id:"):
            try:
                template[Attribute.ID] = bytes.fromhex(key_id[3:])
            except ValueError:
                raise KeystoreConfigError("an id: reference is hexadecimal") from None
        else:
            template[Attribute.LABEL] = key_id
        try:
            found = list(session.get_objects(template))
        except p11.PKCS11Error as exc:
            raise _TokenUnanswering(
                f"the token cannot be searched ({type(exc).__name__})"
            ) from None
        if not found:
            self._ensure_token_answers(session)
            raise RootKeyNotFound("the token has no such key")
        if len(found) > 1:
            raise KeystoreRefused("several keys in the token have this reference; use id:<hex>")
        return found[0]

    def _ensure_token_answers(self, session: pkcs11.Session) -> None:
        """Tell a key that is gone from a token that is gone. A SoftHSM2 token whose storage
        disappeared still serves the open session, which then shows no objects at all; asking
        the library for the token again fails. It is seen again only after re-initialising
        the library, which the next call then does."""
        if any(True for _ in session.get_objects({})):
            return
        try:
            find_token(pkcs11.lib(self._library), self._token_label)
        except p11.PKCS11Error as exc:
            self._restart_next = True
            raise _TokenUnanswering(f"the token does not answer ({type(exc).__name__})") from None

    def _call(self, operation: Callable[[pkcs11.Session], T]) -> T:
        restart = self._restart_next and _may_restart()
        if restart:
            self._restart_next = False
        for attempt in (1, 2):
            try:
                if self._claimed is None or self._claimed != self._session.serial:
                    self._claim(restart=restart)
                    restart = False
                return self._session.run(operation, restart=restart)
            except LoginRefused:
                raise KeystoreRefused("the token refused the PIN") from None
            except (
                KeystoreRefused,
                RootKeyNotFound,
                RootKeyIntegrityError,
                KeystoreConfigError,
                _TokenUnanswering,
            ):
                raise  # the operation's own verdict: retrying would not change it
            except KeystoreUnavailable as exc:
                # A token created, or brought back, after the library was initialised is seen
                # only after re-initialising it: once per call, and at most once a second.
                if attempt == 1 and not restart:
                    restart = _restart_after_wait(failed_in=library_generation())
                    continue
                missing = isinstance(exc, TokenNotFound)
                raise KeystoreUnavailable(
                    f"no token labelled {self._token_label!r}"
                    if missing
                    else f"the token cannot be used ({exc})"
                ) from None
        raise AssertionError("unreachable")

    def _claim(self, *, restart: bool) -> None:
        """Log in (checking the PIN and refusing the platform's token), then make sure the
        token is this owner's, outside the PKCS#11 lock."""
        serial = self._session.run(lambda session: self._session.serial, restart=restart)
        assert serial is not None
        token_claim(library=self._library, serial=serial, owner=self._owner)
        self._claimed = serial


class PlatformTokenRefused(KeystoreRefused):
    """A customer's keystore named the platform's own token."""


def _refuse_platform_token(lib: Any, token: pkcs11.Token, library: str) -> None:
    """Refuse the platform's token (same library, same serial): its keys are the platform's
    and every tenant's, whatever their labels."""
    if token_identity(settings.KCM_PKCS11_LIBRARY) != token_identity(library):
        return
    with contextlib.suppress(p11.PKCS11Error):
        platform = find_token(lib, settings.KCM_PKCS11_TOKEN_LABEL)
        if bytes(platform.serial) != bytes(token.serial):
            return
        raise PlatformTokenRefused("the platform's own token cannot be a key manager")


class _TokenUnanswering(KeystoreUnavailable):
    """Found by the operation itself: the token is there but does not answer (the next call
    re-initialises the library)."""


def _permitted(operation: Callable[[], Any]) -> Any:
    try:
        return operation()
    except p11.PKCS11Error as exc:
        if f"0x{_KEY_FUNCTION_NOT_PERMITTED:x}" in str(exc) and type(exc) is p11.PKCS11Error:
            raise KeystoreRefused("the token does not permit this use of the key") from None
        raise


def _restart_after_wait(*, failed_in: int) -> bool:
    """Whether to re-initialise the library before retrying a call that failed in library
    generation `failed_in`: at once if none was in the last second, else once the rest of that
    second has passed (outside the PKCS#11 lock). False if another call re-initialised it in the
    meantime: the retry then reopens its session on the new one, which sees every token."""
    while (wait := _claim_restart()) > 0:
        time.sleep(wait)
        if library_generation() != failed_in:
            return False
    return True


def _may_restart() -> bool:
    return _claim_restart() == 0


def _claim_restart() -> float:
    """Claim this second's one re-initialisation of the library: 0 if claimed, else the seconds
    until it may be."""
    with _restart_lock:
        now = time.monotonic()
        wait = _last_restart[0] + _RESTART_INTERVAL_SECONDS - now
        if wait > 0:
            return wait
        _last_restart[0] = now
        return 0
