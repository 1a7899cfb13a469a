"""The platform's HSM: root keys in a PKCS#11 token through python-pkcs11 (SoftHSM2 in
development and tests).

What the token can do is read from its mechanism list when the session first opens: a token
without CKM_AES_GCM cannot wrap, and the platform refuses it at start and in its readiness
check, naming the missing mechanism.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TypeVar

import pkcs11
from django.conf import settings
from pkcs11 import Mechanism

from apps.keystores.base import (
    CAP_CREATE,
    CAP_DESTROY,
    CAP_SIGN,
    CAP_WRAP,
    NONCE_BYTES,
    WRAPPING_KEY_BITS,
    CapabilityNotSupported,
    KeyCheck,
    Keystore,
    KeystoreError,
    KeystoreUnavailable,
    RootKeyNotFound,
    import_capability,
    key_id_from_handle,
    measured,
    new_key_id,
    split_blob,
)
from apps.keystores.pkcs11 import aes, signing
from apps.keystores.pkcs11 import importing as pkcs11_import
from apps.keystores.pkcs11.session import TokenSession

log = logging.getLogger(__name__)

T = TypeVar("T")

# The mechanisms each capability needs. SHA-256 OAEP cannot be probed through the mechanism
# list (SoftHSM2 lists OAEP and then refuses SHA-256 with ArgumentsBad), so the operator
# declares it (KCM_PKCS11_OAEP_SHA256).
MECHANISMS: dict[str, tuple[Mechanism, ...]] = {
    CAP_WRAP: (Mechanism.AES_GCM,),
    CAP_CREATE: (Mechanism.AES_KEY_GEN,),
    CAP_SIGN: (Mechanism.EC_KEY_PAIR_GEN, Mechanism.ECDSA),
    "import:RSAES_OAEP": (Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.RSA_PKCS_OAEP),
    # And an RFC 5649 unwrap: see `importing.rfc5649_mechanism`.
    "import:RSA_AES_KEY_WRAP": (Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.RSA_PKCS_OAEP),
}


def capabilities_of(
    mechanisms: frozenset[Mechanism], *, oaep_sha256: bool, rfc5649: Mechanism | None = None
) -> frozenset[str]:
    """What a token with these mechanisms (and this RFC 5649 unwrap mechanism) can do."""
    caps = {CAP_DESTROY}
    hashes = ("SHA_1", "SHA_256") if oaep_sha256 else ("SHA_1",)
    for cap, needed in MECHANISMS.items():
        if not all(m in mechanisms for m in needed):
            continue
        if cap == "import:RSA_AES_KEY_WRAP" and rfc5649 is None:
            continue
        if cap.startswith("import:"):
            caps |= {import_capability(f"{cap[7:]}_{digest}") for digest in hashes}
        else:
            caps.add(cap)
    return frozenset(caps)


class Pkcs11Keystore(Keystore):
    """Root keys as non-extractable AES-256 token objects; the handle is the hex CKA_ID."""

    name = "pkcs11"

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
            raise KeystoreUnavailable(
                "no PKCS#11 user PIN configured: set KCM_PKCS11_PIN or KCM_PKCS11_PIN_FILE"
            )
        self._token_label = token_label
        self._oaep_sha256 = oaep_sha256
        self.session = TokenSession(
            library=library, token_label=token_label, pin=pin, timeout=timeout
        )
        self._keys: dict[str, aes.AesKey] = {}
        self._rfc5649: tuple[frozenset[Mechanism], Mechanism | None] | None = None
        self.session.on_new_session = self._keys.clear

    @classmethod
    def from_settings(cls) -> Pkcs11Keystore:
        return cls(
            library=settings.KCM_PKCS11_LIBRARY,
            token_label=settings.KCM_PKCS11_TOKEN_LABEL,
            pin=settings.KCM_PKCS11_PIN,
            timeout=settings.KCM_PKCS11_TIMEOUT_SECONDS,
            oaep_sha256=settings.KCM_PKCS11_OAEP_SHA256,
        )

    @property
    def capabilities(self) -> frozenset[str]:  # type: ignore[override]
        return capabilities_of(
            self._mechanisms(), oaep_sha256=self._oaep_sha256, rfc5649=self.rfc5649_mechanism
        )

    def _mechanisms(self) -> frozenset[Mechanism]:
        if self.session.mechanisms is None:
            self.session.run(lambda session: None)  # opening the session reads the list
        assert self.session.mechanisms is not None
        return self.session.mechanisms

    @property
    def rfc5649_mechanism(self) -> Mechanism | None:
        """The token's RFC 5649 unwrap mechanism (probed once per mechanism list)."""
        mechanisms = self._mechanisms()
        if self._rfc5649 is None or self._rfc5649[0] != mechanisms:
            chosen = self.session.run(
                lambda session: pkcs11_import.rfc5649_mechanism(session, mechanisms)
            )
            self._rfc5649 = (mechanisms, chosen)
        return self._rfc5649[1]

    def missing_detail(self) -> str:
        mechanisms = self.session.mechanisms or frozenset()
        missing = sorted(
            {m.name for needed in MECHANISMS.values() for m in needed if m not in mechanisms}
        )
        return f" (token {self._token_label!r} has no {', '.join('CKM_' + m for m in missing)})"

    # Wrapping.

    @measured("encrypt")
    def encrypt(self, ref: str, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._with_key(
            ref, lambda key: aes.gcm_seal_verified(key, nonce, plaintext, aad)
        )

    @measured("decrypt")
    def decrypt(self, ref: str, blob: bytes, aad: bytes) -> bytes:
        nonce, sealed = split_blob(blob)
        return self._with_key(ref, lambda key: aes.gcm_decrypt(key, nonce, sealed, aad))

    def health(self) -> dict[str, object]:
        report: dict[str, object] = {"keystore": self.name, "token": self._token_label}
        try:
            self.session.run(lambda session: session.generate_random(64))
        except Exception as exc:  # health reports, it never raises
            return {"ok": False, **report, "error": str(exc)}
        return {"ok": True, **report}

    # Lifecycle.

    @measured("create_root_key")
    def create_root_key(self, *, label: str) -> str:
        key_id = new_key_id()
        handle = key_id.hex()

        def generate(session: pkcs11.Session) -> None:
            self._keys[handle] = aes.generate(session, key_id=key_id, label=label)

        self.session.run(generate)
        log.info("PKCS#11 root key created (handle %s, token %s)", handle, self._token_label)
        return handle

    def destroy(self, ref: str) -> None:
        key_id = key_id_from_handle(ref)

        def destroy(session: pkcs11.Session) -> None:
            self._keys.pop(ref, None)
            key = aes.find(session, key_id)
            if key is None:
                raise RootKeyNotFound("no root key with this handle")
            key.destroy()

        self._look_up(destroy)
        log.info("PKCS#11 root key destroyed (handle %s, token %s)", ref, self._token_label)

    def exists(self, ref: str) -> bool:
        try:
            key_id = key_id_from_handle(ref)
        except RootKeyNotFound:
            return False

        def find(session: pkcs11.Session) -> None:
            if aes.find(session, key_id) is None:
                raise RootKeyNotFound("no root key with this handle")

        try:
            self._look_up(find)
        except RootKeyNotFound:
            return False
        return True

    # Signing.

    def create_signing_key(self, *, label: str) -> str:
        key_id = new_key_id()
        self.session.run(lambda s: signing.generate_pair(s, key_id=key_id, label=label))
        return key_id.hex()

    @measured("sign")
    def sign(self, ref: str, data: bytes) -> bytes:
        key_id = key_id_from_handle(ref)
        return self._look_up(lambda session: signing.sign(session, key_id, data))

    def public_key_der(self, ref: str) -> bytes:
        key_id = key_id_from_handle(ref)
        return self._look_up(lambda session: signing.public_key_der(session, key_id))

    # BYOK: see importing.py.

    def create_wrapping_key(self, *, label: str, bits: int) -> tuple[str, bytes]:
        if bits not in WRAPPING_KEY_BITS:
            raise KeystoreError(f"wrapping keys are {WRAPPING_KEY_BITS} bits, not {bits}")
        key_id = new_key_id()
        public = self.session.run(
            lambda s: pkcs11_import.generate_wrapping_pair(s, key_id=key_id, label=label, bits=bits)
        )
        return key_id.hex(), public

    def destroy_wrapping_key(self, ref: str) -> None:
        key_id = key_id_from_handle(ref)
        self._look_up(lambda session: pkcs11_import.destroy_wrapping_pair(session, key_id))

    def import_root_key(
        self, *, wrapping_handle: str, algorithm: str, wrapped: bytes, label: str
    ) -> str:
        if not self.supports(import_capability(algorithm)):
            raise CapabilityNotSupported(f"this HSM cannot import {algorithm}")
        wrapping_id = key_id_from_handle(wrapping_handle)
        key_id = new_key_id()
        handle = key_id.hex()
        rfc5649 = self.rfc5649_mechanism

        def unwrap(session: pkcs11.Session) -> None:
            key = pkcs11_import.unwrap_root_key(
                session,
                wrapping_id=wrapping_id,
                algorithm=algorithm,
                wrapped=wrapped,
                new_id=key_id,
                label=label,
                template=aes.ROOT_KEY_TEMPLATE,
                rfc5649=rfc5649,
            )
            self._keys[handle] = key

        self._look_up(unwrap)
        log.info("PKCS#11 root key imported (handle %s, token %s)", handle, self._token_label)
        return handle

    def key_check(self, ref: str) -> KeyCheck:
        return self._with_key(ref, pkcs11_import.key_check)

    # Plumbing.

    def _with_key(self, ref: str, use: Callable[[aes.AesKey], T]) -> T:
        """Run `use` on the key object for `ref`, from the per-process cache when possible."""
        key_id = key_id_from_handle(ref)

        def operation(session: pkcs11.Session) -> T:
            key = self._keys.get(ref)
            if key is not None:
                try:
                    return use(key)
                except aes.STALE_OBJECT:
                    del self._keys[ref]
            key = aes.find(session, key_id)
            if key is None:
                raise RootKeyNotFound("no root key with this handle")
            self._keys[ref] = key
            return use(key)

        return self._look_up(operation)

    def _look_up(self, operation: Callable[[pkcs11.Session], T]) -> T:
        """Run `operation`, which finds a key by CKA_ID; when it finds none, re-initialise the
        library (finalize, initialize, log in again, under the process lock) and run it once
        more before reporting `RootKeyNotFound`.

        SoftHSM2's file store indexes a token's objects per process and re-reads the folder
        only when the token's generation on disk changed since this process last looked; but
        creating or destroying an object here records the bumped generation without re-reading.
        So a key another process created just before stays invisible to this one (C_FindObjects
        skips it), and new sessions or logins do not help: only C_Finalize/C_Initialize does.
        """
        try:
            return self.session.run(operation)
        except RootKeyNotFound:
            log.info("PKCS#11 key not found; re-initialising the library to look again")
            return self.session.run(operation, restart=True)
