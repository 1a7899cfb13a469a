"""HYOK over KMIP 1.4 with PyKMIP's client (tested against a real `pykmip-server`).

PyKMIP's high-level client drops the fields AES-GCM needs (associated data, tag), which exist
only from KMIP 1.4 on; so this keystore builds the Encrypt/Decrypt/GetAttributes payloads
itself and sends them through PyKMIP's `KMIPProxy`. TLS is set up here rather than by PyKMIP:
a TLS 1.2+ client context that verifies the server's certificate *and* host name against the
customer's CA, with the client certificate and key loaded from memory (an anonymous memfd,
never a file on disk).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import ssl
import threading
from socket import socket as Socket
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kmip.core import enums
from kmip.core import exceptions as kmip_errors
from kmip.core.attributes import CryptographicParameters
from kmip.core.messages import payloads
from kmip.services.kmip_client import KMIPProxy

from apps.keystores.base import (
    CAP_SYNC,
    CAP_WRAP,
    NONCE_BYTES,
    TAG_BYTES,
    KeyInfo,
    Keystore,
    KeystoreConfigError,
    KeystoreError,
    KeystoreRefused,
    KeystoreUnavailable,
    RootKeyDestroyed,
    RootKeyIntegrityError,
    RootKeyNotFound,
    measured,
)

log = logging.getLogger(__name__)
# PyKMIP warns on every connection that no client configuration file exists: we configure it
# with arguments only, on purpose.
logging.getLogger("kmip.core.config_helper").setLevel(logging.ERROR)

_GCM = CryptographicParameters(
    block_cipher_mode=enums.BlockCipherMode.GCM,
    cryptographic_algorithm=enums.CryptographicAlgorithm.AES,
    tag_length=TAG_BYTES,
)
_ATTRIBUTES = ["State", "Cryptographic Algorithm", "Cryptographic Length", "Object Type"]
_USAGE = "Cryptographic Usage Mask"
_GONE = {enums.ResultReason.ITEM_NOT_FOUND}
_BAD_BLOB = {enums.ResultReason.CRYPTOGRAPHIC_FAILURE, enums.ResultReason.GENERAL_FAILURE}
# What goes wrong on the wire; anything PyKMIP raises while reading a reply counts too.
_WIRE = (
    OSError,
    EOFError,
    kmip_errors.KmipError,
    kmip_errors.ConnectionClosed,
    kmip_errors.NetworkingError,
    kmip_errors.InvalidKmipEncoding,
    kmip_errors.InvalidPrimitiveLength,
    kmip_errors.ReadValueError,
    kmip_errors.StreamNotEmptyError,
    ValueError,
)
# TLS alerts by which a server says our client certificate is not welcome (revoked, unknown).
_REFUSING_ALERTS = ("CERTIFICATE", "UNKNOWN_CA", "ACCESS_DENIED")


class _Proxy(KMIPProxy):
    """PyKMIP's KMIP client with our TLS context instead of the one it builds."""

    socket: ssl.SSLSocket | None

    def __init__(self, *, context: ssl.SSLContext, server_name: str, **kwargs: Any) -> None:
        self._context = context
        self._server_name = server_name
        super().__init__(**kwargs)

    def _create_socket(self, sock: Socket) -> None:
        self.socket = self._context.wrap_socket(
            sock, server_side=False, server_hostname=self._server_name
        )
        self.socket.settimeout(self.timeout)


def tls_context(*, ca_pem: str, client_cert_pem: str, client_key_pem: str) -> ssl.SSLContext:
    """A client context trusting only `ca_pem`, presenting the client certificate."""
    try:
        certificate = x509.load_pem_x509_certificate(client_cert_pem.encode())
        private = serialization.load_pem_private_key(client_key_pem.encode(), password=None)
        x509.load_pem_x509_certificates(ca_pem.encode())
    except (ValueError, TypeError) as exc:
        raise KeystoreConfigError(f"a certificate or key is not valid PEM ({exc})") from None
    if certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise KeystoreConfigError("the client key does not match the client certificate")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cadata=ca_pem)
    with (
        _memory_file(client_cert_pem.encode()) as cert_path,
        _memory_file(client_key_pem.encode()) as key_path,
    ):
        context.load_cert_chain(cert_path, key_path)
    return context


@contextlib.contextmanager
def _memory_file(data: bytes) -> Any:
    """A path to `data` that lives in memory only (Linux memfd), closed afterwards."""
    descriptor = os.memfd_create("kcm-kmip", os.MFD_CLOEXEC)
    try:
        os.write(descriptor, data)
        yield f"/proc/self/fd/{descriptor}"
    finally:
        os.close(descriptor)


class KmipKeystore(Keystore):
    """A KMIP server; one TLS connection per process, re-opened when it breaks."""

    name = "kmip"
    capabilities = frozenset({CAP_WRAP, CAP_SYNC})

    def __init__(
        self,
        *,
        host: str,
        port: int,
        context: ssl.SSLContext,
        server_name: str | None = None,
        timeout: float,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._context = context
        self._server_name = server_name or host
        self._timeout = timeout
        self._username = username
        self._password = password
        self._lock = threading.Lock()
        self._proxy: _Proxy | None = None

    # The interface.

    @measured("describe")
    def describe(self, key_id: str) -> KeyInfo:
        request = payloads.GetAttributesRequestPayload(
            unique_identifier=key_id, attribute_names=[*_ATTRIBUTES, _USAGE]
        )
        reply = self._request(enums.Operation.GET_ATTRIBUTES, request, decrypting=False)
        values = {a.attribute_name.value: a.attribute_value for a in reply.attributes}
        state = getattr(values.get("State"), "value", None)
        algorithm = getattr(values.get("Cryptographic Algorithm"), "value", None)
        length = getattr(values.get("Cryptographic Length"), "value", 0)
        object_type = getattr(values.get("Object Type"), "value", None)
        usage = int(getattr(values.get(_USAGE), "value", 0) or 0)
        wanted = (
            enums.CryptographicUsageMask.ENCRYPT.value | enums.CryptographicUsageMask.DECRYPT.value
        )
        if state in (enums.State.DESTROYED, enums.State.DESTROYED_COMPROMISED):
            raise RootKeyDestroyed(f"the KMIP server reports the key {state.name}")
        problems = []
        if object_type != enums.ObjectType.SYMMETRIC_KEY:
            problems.append(f"object type {getattr(object_type, 'name', object_type)}")
        if state != enums.State.ACTIVE:
            problems.append(f"state {getattr(state, 'name', state)}")
        if usage & wanted != wanted:
            problems.append("usage mask lacks Encrypt and Decrypt")
        return KeyInfo(
            algorithm=getattr(algorithm, "name", str(algorithm)),
            bits=int(length or 0),
            usable=not problems,
            detail="; ".join(problems),
        )

    @measured("encrypt")
    def encrypt(self, key_id: str, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        request = payloads.EncryptRequestPayload(
            unique_identifier=key_id,
            data=plaintext,
            cryptographic_parameters=_GCM,
            iv_counter_nonce=nonce,
            auth_additional_data=aad,
        )
        reply = self._request(enums.Operation.ENCRYPT, request, decrypting=False)
        if not reply.data or not reply.auth_tag or len(reply.auth_tag) != TAG_BYTES:
            raise KeystoreRefused("the KMIP server returned no AES-GCM tag (is it KMIP 1.4?)")
        return nonce + bytes(reply.data) + bytes(reply.auth_tag)

    @measured("decrypt")
    def decrypt(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise RootKeyIntegrityError("the wrapped key is too short")
        request = payloads.DecryptRequestPayload(
            unique_identifier=key_id,
            data=blob[NONCE_BYTES:-TAG_BYTES],
            cryptographic_parameters=_GCM,
            iv_counter_nonce=blob[:NONCE_BYTES],
            auth_additional_data=aad,
            auth_tag=blob[-TAG_BYTES:],
        )
        reply = self._request(enums.Operation.DECRYPT, request, decrypting=True)
        return bytes(reply.data)

    def health(self) -> dict[str, object]:
        report: dict[str, object] = {"keystore": self.name, "host": self._host}
        try:
            with self._lock:
                self._connect()
        except Exception as exc:  # health reports, it never raises
            return {"ok": False, **report, "error": str(exc)}
        return {"ok": True, **report}

    def close(self) -> None:
        with self._lock:
            self._disconnect()

    def abandon(self) -> None:
        if self._proxy is not None:
            self._proxy.socket = None  # PyKMIP would shut the parent's socket down on __del__
            self._proxy = None
        self._lock = threading.Lock()

    # Plumbing.

    def _request(self, operation: enums.Operation, request: Any, *, decrypting: bool) -> Any:
        if not self._lock.acquire(timeout=self._timeout):
            raise KeystoreUnavailable("timed out waiting for the KMIP connection")
        try:
            # A kept connection may have died since (server restarted): one fresh attempt.
            for attempt in (1, 2):
                reused = self._proxy is not None
                proxy = self._connect()
                try:
                    return proxy.send_request_payload(operation, request)
                except kmip_errors.OperationFailure as exc:
                    raise _refusal(exc, decrypting) from None
                except _WIRE as exc:
                    self._disconnect()
                    if attempt == 1 and reused:
                        continue
                    raise _unreachable(exc) from None
            raise AssertionError("unreachable")
        finally:
            self._lock.release()

    def _connect(self) -> _Proxy:
        if self._proxy is not None:
            return self._proxy
        proxy = _Proxy(
            context=self._context,
            server_name=self._server_name,
            host=self._host,
            port=self._port,
            timeout=max(1, math.ceil(self._timeout)),
            username=self._username,
            password=self._password,
            kmip_version=enums.KMIPVersion.KMIP_1_4,
        )
        try:
            proxy.open()
        except (OSError, ssl.SSLError) as exc:
            with contextlib.suppress(Exception):
                proxy.close()
            raise _unreachable(exc) from None
        self._proxy = proxy
        return proxy

    def _disconnect(self) -> None:
        if self._proxy is not None:
            with contextlib.suppress(Exception):
                self._proxy.close()
            self._proxy = None


def _refusal(exc: kmip_errors.OperationFailure, decrypting: bool) -> KeystoreError:
    reason = exc.reason
    name = getattr(reason, "name", str(reason))
    if reason in _GONE:
        return RootKeyNotFound(f"the KMIP server has no such key ({name})")
    if decrypting and reason in _BAD_BLOB:
        return RootKeyIntegrityError(f"the KMIP server could not decrypt ({name})")
    return KeystoreRefused(f"the KMIP server refused ({name}: {str(exc)[:200]})")


def _unreachable(exc: BaseException) -> KeystoreError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return KeystoreUnavailable(f"the KMIP server's certificate is not trusted ({exc.reason})")
    reason = getattr(exc, "reason", None) or ""
    if (
        isinstance(exc, ssl.SSLError)
        and "ALERT" in reason
        and any(alert in reason for alert in _REFUSING_ALERTS)
    ):
        return KeystoreRefused(f"the KMIP server refused our TLS client ({reason})")
    return KeystoreUnavailable(f"the KMIP server cannot be reached ({type(exc).__name__})")
