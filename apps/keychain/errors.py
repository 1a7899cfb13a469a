from __future__ import annotations

from apps.core.errors import Conflict, KcmError, NotFound, ServiceUnavailable


class KeyNotFound(NotFound):
    code = "key_not_found"
    title = "No such key"


class InvalidKeyState(Conflict):
    code = "invalid_key_state"
    title = "The key's state does not allow this"


class KeyDisabled(Conflict):
    code = "key_disabled"
    title = "The key, or a key above it in the chain, is disabled"


class KeyPendingDeletion(Conflict):
    code = "key_pending_deletion"
    title = "The key, or a key above it in the chain, is scheduled for deletion"


class KeyDestroyed(KcmError):
    status = 410
    code = "key_destroyed"
    title = "The key, or a key above it in the chain, was destroyed: data under it is unrecoverable"


class KeyUnavailable(ServiceUnavailable):
    code = "key_unavailable"
    title = "The key's root is unavailable right now"


class KeyVersionUnavailable(Conflict):
    code = "key_version_unavailable"
    title = "The key version that made this ciphertext is retired or destroyed"


class WrongTenantCiphertext(KcmError):
    code = "ciphertext_wrong_tenant"
    title = "The ciphertext belongs to another tenant"


class WrongKeyCiphertext(KcmError):
    code = "ciphertext_wrong_key"
    title = "The ciphertext was made with another service key"


class UsageLimitReached(Conflict):
    code = "usage_limit_reached"
    title = "The service key's primary version reached its encryption limit; rotate it"


class HsmUnavailable(ServiceUnavailable):
    code = "hsm_unavailable"
    title = "The HSM is unavailable"
