"""One PKCS#11 token, logged in, used under the process-wide lock.

Process model (see HSM-NOTES): the library is initialised lazily in the process that uses it,
never before a fork; a child re-initialises on first use. Every PKCS#11 call of the process runs
under one lock, because python-pkcs11 initialises the library without CKF_OS_LOCKING_OK and
SoftHSM then crashes when two threads use it at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import pkcs11
from pkcs11 import Mechanism
from pkcs11 import exceptions as p11

from apps.core.forks import after_fork_in_child
from apps.keystores.base import KeystoreUnavailable

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
# A login that may succeed when retried: SoftHSM's file backend races when many processes start
# or re-initialise while another one writes the token (it then reads a token without its user
# PIN: seen once in ten benchmark runs, under other processes' load on the same token).
_LOGIN_RACE = (p11.NoSuchToken, p11.GeneralError, p11.UserPinNotInitialized)
_LOGIN_ATTEMPTS = 5
_LOGIN_BACKOFF_SECONDS = 0.05


class TokenNotFound(KeystoreUnavailable):
    """No token with the configured label (not present, or created after C_Initialize)."""


class LoginRefused(KeystoreUnavailable):
    """The token refused the PIN (wrong, locked or invalid)."""


class _Process:
    """PKCS#11 state shared by every session object of this process.

    `generation` grows on every (re-)initialisation of the library; a session opened in an older
    generation is dead. `pid` is the process that initialised it.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid: int | None = None
        self.generation = 0
        # Login is per process and token, and a token already logged in opens sessions
        # without checking the PIN given (SoftHSM2 answers CKR_USER_ALREADY_LOGGED_IN before
        # it looks at it). So remember a keyed digest of the PIN that logged in to each
        # (library, token serial), and compare later PINs with it.
        self.pin_key = os.urandom(32)
        self.logins: dict[tuple[str, bytes], bytes] = {}

    def pin_digest(self, pin: str) -> bytes:
        return hmac.new(self.pin_key, pin.encode(), hashlib.sha256).digest()

    def forget_logins(self, library: str | None = None) -> None:
        for key in [k for k in self.logins if library is None or k[0] == library]:
            del self.logins[key]


_process = _Process()


def _after_fork_in_child() -> None:
    # The parent's lock may have been held by a thread that does not exist here, and the
    # inherited sessions must not be used: mark them stale so the next call re-initialises.
    _process.lock = threading.Lock()
    _process.pid = None
    _process.forget_logins()


after_fork_in_child(_after_fork_in_child)


def library_generation() -> int:
    """How many times this process has (re-)initialised the PKCS#11 library."""
    return _process.generation


def is_lost_session(exc: p11.PKCS11Error) -> bool:
    # python-pkcs11 has no class for CKR_CRYPTOKI_NOT_INITIALIZED, only this message.
    return isinstance(exc, _LOST_SESSION) or (
        type(exc) is p11.PKCS11Error and "not initialized" in str(exc)
    )


def unavailable(exc: p11.PKCS11Error) -> KeystoreUnavailable:
    # Name the failure only: python-pkcs11 messages may echo templates or arguments.
    return KeystoreUnavailable(f"PKCS#11 operation failed ({type(exc).__name__})")


class TokenSession:
    """A logged-in session on the token labelled `token_label`, re-opened after a fork or a
    lost session; `run` executes one operation with it under the process-wide lock."""

    def __init__(
        self,
        *,
        library: str,
        token_label: str,
        pin: str,
        timeout: float,
        login_attempts: int = _LOGIN_ATTEMPTS,
    ) -> None:
        self.library_path = library
        self.token_label = token_label
        self._pin = pin
        self._timeout = timeout
        # Each retry re-initialises the library (every session of the process, under the
        # process lock) after a pause: worth it for a token that must be there, not for one
        # that may be gone (a customer's, whose keystore retries at its own pace).
        self._login_attempts = login_attempts
        self._session: pkcs11.Session | None = None
        self._generation = -1
        self.mechanisms: frozenset[Mechanism] | None = None
        # The serial number of the token of the current session (None before the first).
        self.serial: bytes | None = None
        # Called with the library and the token before logging in to it; may refuse the token
        # by raising a `KeystoreError` (the platform's own token, for a customer's keystore).
        self.check_token: Callable[[Library, pkcs11.Token], None] = lambda lib, token: None
        # Called with no arguments whenever the session is (re)opened: object handles cached
        # by the caller belong to the old one.
        self.on_new_session: Callable[[], None] = lambda: None

    def run(self, operation: Callable[[pkcs11.Session], T], *, restart: bool = False) -> T:
        """Run one operation under the process lock; re-initialise and retry once if the
        session was lost. PKCS#11 errors leave as `KeystoreError`s. `restart` re-initialises
        the library first (tokens created after C_Initialize are invisible until then)."""
        lock = _process.lock
        if not lock.acquire(timeout=self._timeout):
            raise KeystoreUnavailable(
                f"timed out after {self._timeout:g} s waiting for the PKCS#11 lock"
            )
        try:
            try:
                return operation(self._connect(restart=restart))
            except p11.PKCS11Error as exc:
                if not is_lost_session(exc):
                    raise unavailable(exc) from None
                log.warning("PKCS#11 session lost (%s); re-initialising", type(exc).__name__)
            try:
                return operation(self._connect(restart=True))
            except p11.PKCS11Error as exc:
                raise unavailable(exc) from None
        finally:
            lock.release()

    def _connect(self, *, restart: bool) -> pkcs11.Session:
        """The logged-in session, (re-)initialising the library when needed. Caller holds the
        process lock."""
        try:
            lib = pkcs11.lib(self.library_path)
        except p11.PKCS11Error:
            raise KeystoreUnavailable(
                f"cannot load the PKCS#11 library {self.library_path!r}"
            ) from None
        if restart or _process.pid != os.getpid():
            # In a forked child the library state is the parent's: finalise it (which fails
            # harmlessly if it is not initialised here) and start afresh.
            with contextlib.suppress(p11.PKCS11Error):
                lib.finalize()
            lib.initialize()
            _process.forget_logins(None if _process.pid != os.getpid() else self.library_path)
            _process.pid = os.getpid()
            _process.generation += 1
        if self._session is None or self._generation != _process.generation:
            self.on_new_session()
            self._session = self._login(lib)
            self._generation = _process.generation
        return self._session

    def _login(self, lib: Library) -> pkcs11.Session:
        for attempt in range(1, self._login_attempts + 1):
            try:
                token = find_token(lib, self.token_label)
                self.check_token(lib, token)
                if self.mechanisms is None:
                    self.mechanisms = frozenset(token.slot.get_mechanisms())
                login = (self.library_path, bytes(token.serial))
                digest = _process.pin_digest(self._pin)
                try:
                    session = token.open(rw=True, user_pin=self._pin)
                    _process.logins[login] = digest
                except p11.UserAlreadyLoggedIn:
                    # Login is per process and another session of ours already did it; the
                    # token did not check this PIN, so we do: it must be the one that logged
                    # in. python-pkcs11 leaves the session of the refused login open; it is
                    # closed at the next C_Finalize.
                    known = _process.logins.get(login)
                    if known is None or not hmac.compare_digest(known, digest):
                        raise p11.PinIncorrect() from None
                    session = token.open(rw=True)
                self.serial = login[1]
                return session
            except _LOGIN_RACE as exc:
                if attempt == self._login_attempts:
                    missing = isinstance(exc, p11.NoSuchToken)
                    raise (TokenNotFound if missing else KeystoreUnavailable)(
                        f"PKCS#11 token {self.token_label!r} not available "
                        f"({type(exc).__name__} after {attempt} attempts)"
                    ) from None
                time.sleep(_LOGIN_BACKOFF_SECONDS * 2 ** (attempt - 1))
                # SoftHSM2 reads its tokens once, at C_Initialize: one read while another
                # process rewrote the token file (it does at every login) stays wrong until
                # the library is initialised again, however often the login is retried.
                _reinitialise(lib, self.library_path)
            except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange, p11.PinLocked) as exc:
                raise LoginRefused(
                    f"PKCS#11 login to token {self.token_label!r} refused ({type(exc).__name__})"
                ) from None
        raise AssertionError("unreachable")


def _reinitialise(lib: Library, library_path: str) -> None:
    """C_Finalize and C_Initialize again (caller holds the process lock): every session of
    this process on the library is then stale, and reopened on its next use."""
    with contextlib.suppress(p11.PKCS11Error):
        lib.finalize()
    lib.initialize()
    _process.forget_logins(library_path)
    _process.generation += 1


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
