"""Why a single sign-on was refused or a provider could not be set: stable codes, shown to the
person signing in and recorded in the audit log (never with a token or the secret)."""

from __future__ import annotations

from apps.core.errors import Conflict, KcmError, ServiceUnavailable, ValidationFailed


class SsoRefused(KcmError):
    """A sign-in through the provider that KCM refuses (403), with the reason's `code`."""

    status = 403
    code = "sso_refused"
    title = "Single sign-on refused"


class SsoNotConfigured(KcmError):
    status = 404
    code = "sso_not_configured"
    title = "This tenant has no single sign-on provider"


class ProviderUnreachable(ServiceUnavailable):
    code = "sso_provider_unavailable"
    title = "The sign-on provider did not answer as expected"


class InvalidProvider(ValidationFailed):
    code = "invalid_sso_provider"


class PasswordsNeeded(Conflict):
    code = "local_passwords_needed"
