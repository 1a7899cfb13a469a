"""L1 root-key providers: the HSM (PKCS#11) and a development-only software store."""

from apps.keychain.providers.base import (
    CAP_AES_GCM,
    CAP_DESTROY,
    CAP_GENERATE,
    CAP_SIGN,
    CapabilityNotSupported,
    ProviderError,
    ProviderUnavailable,
    RootKeyIntegrityError,
    RootKeyNotFound,
    RootKeyProvider,
)
from apps.keychain.providers.registry import get_provider, reset_provider

__all__ = [
    "CAP_AES_GCM",
    "CAP_DESTROY",
    "CAP_GENERATE",
    "CAP_SIGN",
    "CapabilityNotSupported",
    "ProviderError",
    "ProviderUnavailable",
    "RootKeyIntegrityError",
    "RootKeyNotFound",
    "RootKeyProvider",
    "get_provider",
    "reset_provider",
]
