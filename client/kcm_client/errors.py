"""Every failure the client reports: one base class, `KcmError`, with a stable `code`.

Server refusals carry the problem+json `code` of the KCM API (README, "Data keys"); failures
found locally while reading a message carry codes of the message format
(docs/message-format.md). Catch a subclass for one case, `KcmError` for all of them.
"""

from __future__ import annotations

from typing import Any


class KcmError(Exception):
    """A refusal with a stable `code`; `status` is the HTTP status (None for local errors)."""

    code = "kcm_error"

    def __init__(
        self,
        detail: str = "",
        *,
        code: str | None = None,
        status: int | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.code)
        self.detail = detail
        if code is not None:
            self.code = code
        self.status = status
        self.body = body or {}

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}" if self.detail else self.code


# --- the server's codes -------------------------------------------------------------------


class AuthenticationError(KcmError):
    """The token is missing, wrong, expired or revoked."""

    code = "invalid_token"


class PermissionDenied(KcmError):
    code = "forbidden"


class NotFound(KcmError):
    code = "not_found"


class ValidationError(KcmError):
    code = "validation_error"


class InvalidContext(ValidationError):
    code = "invalid_context"


class InvalidBase64(ValidationError):
    code = "invalid_base64"


class ContextMismatch(KcmError):
    """The encryption context given is not the one the data was encrypted with."""

    code = "context_mismatch"


class CiphertextInvalid(KcmError):
    code = "ciphertext_invalid"


class CiphertextMalformed(KcmError):
    code = "ciphertext_malformed"


class CiphertextWrongKey(KcmError):
    code = "ciphertext_wrong_key"


class CiphertextWrongTenant(KcmError):
    code = "ciphertext_wrong_tenant"


class KeyUnusable(KcmError):
    """The key (or a key above it in the chain) cannot be used now; cached keys are dropped."""

    code = "key_unavailable"


class KeyDisabled(KeyUnusable):
    code = "key_disabled"


class KeyPendingDeletion(KeyUnusable):
    code = "key_pending_deletion"


class KeyDestroyed(KeyUnusable):
    code = "key_destroyed"


class KeyVersionUnavailable(KcmError):
    code = "key_version_unavailable"


class UsageLimitReached(KcmError):
    code = "usage_limit_reached"


class ServiceUnavailable(KcmError):
    """The server (or its HSM) could not answer, after retries."""

    code = "unavailable"


class HsmUnavailable(ServiceUnavailable):
    code = "hsm_unavailable"


class RateLimited(ServiceUnavailable):
    code = "rate_limited"


class TransportError(ServiceUnavailable):
    """No HTTP answer at all (connection refused, timeout, TLS)."""

    code = "transport_error"


# --- the message format's codes (local) -----------------------------------------------------


class MessageError(KcmError):
    """A message that this client cannot accept as it is."""

    code = "message_invalid"


class MessageMalformed(MessageError):
    """Not a KCM message, or a field out of range."""

    code = "message_malformed"


class UnsupportedFormat(MessageError):
    code = "message_format_unsupported"


class UnsupportedAlgorithm(MessageError):
    code = "message_algorithm_unsupported"


class HeaderInvalid(MessageError):
    """The header's tag does not match: a header field was changed."""

    code = "message_header_invalid"


class FrameInvalid(MessageError):
    """A frame failed authentication: changed, reordered, or from another message."""

    code = "message_frame_invalid"


class MessageTruncated(MessageError):
    """The message ends before its final frame."""

    code = "message_truncated"


class TrailingData(MessageError):
    """Bytes follow the final frame."""

    code = "message_trailing_data"


_BY_CODE: dict[str, type[KcmError]] = {
    cls.code: cls
    for cls in (
        PermissionDenied, NotFound, ValidationError, InvalidContext, InvalidBase64,
        ContextMismatch, CiphertextInvalid, CiphertextMalformed, CiphertextWrongKey,
        CiphertextWrongTenant, KeyUnusable, KeyDisabled, KeyPendingDeletion, KeyDestroyed,
        KeyVersionUnavailable, UsageLimitReached, ServiceUnavailable, HsmUnavailable,
    )
}  # fmt: skip
_BY_CODE.update(
    invalid_token=AuthenticationError,
    not_authenticated=AuthenticationError,
    authentication_failed=AuthenticationError,
    key_not_found=NotFound,
    role_not_allowed=PermissionDenied,
    not_a_member=PermissionDenied,
    wrong_tenant=PermissionDenied,
    keystore_unavailable=ServiceUnavailable,
)


def from_problem(status: int, body: dict[str, Any]) -> KcmError:
    """The exception for a problem+json answer (a generic one for codes this client lacks)."""
    code = str(body.get("code") or f"http_{status}")
    cls = _BY_CODE.get(code)
    if cls is None:
        if status in (401,):
            cls = AuthenticationError
        elif status == 403:
            cls = PermissionDenied
        elif status == 404:
            cls = NotFound
        elif status == 429:
            cls = RateLimited
        elif status >= 500:
            cls = ServiceUnavailable
        else:
            cls = KcmError
    detail = str(body.get("detail") or body.get("title") or "")
    return cls(detail, code=code, status=status, body=body)
