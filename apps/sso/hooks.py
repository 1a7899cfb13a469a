"""What single sign-on plugs into below it: the password sign-in's rule (apps.tenants.signin)."""

from __future__ import annotations

from apps.sso.selectors import local_passwords_allowed
from apps.tenants.models import Tenant
from apps.tenants.signin import password_rule_register


def password_refusal(tenant: Tenant) -> str | None:
    if local_passwords_allowed(tenant=tenant):
        return None
    return "This tenant signs in through its single sign-on provider only."


def hooks_register() -> None:
    password_rule_register(password_refusal)
