from __future__ import annotations

from apps.core.errors import Conflict, KcmError, NotFound, ServiceUnavailable, ValidationFailed


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


class KeyVersionNotFound(NotFound):
    code = "key_version_not_found"
    title = "The key has no such version"


class KeyVersionPrimary(Conflict):
    code = "key_version_primary"
    title = "The primary version wraps new keys: rotate the key before deleting this version"


class KeyVersionInUse(Conflict):
    code = "key_version_in_use"
    title = "Tenant-key versions are still wrapped under this version: finish the rewrap first"


class KeyVersionPendingDeletion(Conflict):
    code = "key_version_pending_deletion"
    title = "The customer-key version that wraps this is scheduled for deletion"


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


# Customer-controlled L1s: BYOK imports and HYOK key managers.


class KeyPendingImport(Conflict):
    code = "key_pending_import"
    title = "The customer key has no usable imported material; import it first"


class KeyMaterialExpired(Conflict):
    code = "key_material_expired"
    title = "The customer key's imported material has expired; import it again"


class ImportAlgorithmUnsupported(ValidationFailed):
    code = "import_algorithm_unsupported"
    title = "This wrapping algorithm is not supported here"


class ImportTokenInvalid(ValidationFailed):
    code = "import_token_invalid"
    title = "The import token is unknown, used already, or for another key"


class ImportTokenExpired(ValidationFailed):
    code = "import_token_expired"
    title = "The import token has expired; request new import parameters"


class ImportRejected(ValidationFailed):
    """The keystore's reason (its code) for refusing wrapped material."""

    code = "import_rejected"
    title = "The wrapped key material was refused"


class ImportMaterialMismatch(Conflict):
    code = "import_material_mismatch"
    title = "This key holds other material; a key's material can only be re-imported as it was"


class ImportMaterialNotNew(Conflict):
    code = "import_material_not_new"
    title = "A new version needs new material; this material is already a version of the key"


class KeyManagerNotFound(NotFound):
    code = "key_manager_not_found"
    title = "No such external key manager"


class KeyManagerInUse(Conflict):
    code = "key_manager_in_use"
    title = "Customer keys still use this key manager"


class KeyManagerNotAllowed(ValidationFailed):
    code = "key_manager_not_allowed"
    title = "The platform does not allow this key manager (host or library)"


class ExternalKeyInvalid(ValidationFailed):
    code = "external_key_invalid"
    title = "The external key cannot serve as a customer key"


class ExternalKeyUnavailable(ServiceUnavailable):
    code = "external_key_unavailable"
    title = "The customer's key manager cannot be reached"


class ExternalKeyForbidden(Conflict):
    code = "external_key_forbidden"
    title = "The customer's key manager refuses to use the key (revoked or access withdrawn)"


def import_rejected(code: str, detail: str) -> KcmError:
    return ImportRejected(detail, code=code)
