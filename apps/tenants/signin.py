"""The one way a console sign-in completes, whatever proved who the user is (a password today;
single sign-on and a second factor plug in here).

`sign_in_finish` is called once the first factor has succeeded and the user is known to be a
member of this tenant (or an operator on the platform). Hooks registered with
`second_step_register` (a higher layer, e.g. multi-factor sign-in) may divert the browser to a
further step instead of logging in at once; that step calls `sign_in_complete` when it passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from django.contrib.auth import login
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from apps.audit import context as audit_context
from apps.audit.services import audit_record
from apps.core.tenancy import Principal
from apps.tenants.models import Tenant

# (request, user, principal, method, next_url) -> a response diverting to a further step, or None.
SecondStep = Callable[[HttpRequest, AbstractBaseUser, Principal, str, str], "HttpResponse | None"]
_second_steps: list[SecondStep] = []


def second_step_register(step: SecondStep) -> None:
    """Install a step that runs between the first factor and the session (once per process)."""
    if step not in _second_steps:
        _second_steps.append(step)


# (tenant) -> why password sign-in is refused in that tenant (a message), or None.
PasswordRule = Callable[[Tenant], "str | None"]
_password_rules: list[PasswordRule] = []


def password_rule_register(rule: PasswordRule) -> None:
    """Install a rule that may refuse password sign-in in a tenant (e.g. single sign-on that
    turned local passwords off)."""
    if rule not in _password_rules:
        _password_rules.append(rule)


def password_refusal(tenant: Tenant) -> str | None:
    """Why passwords do not sign anyone in to `tenant`, or None when they do."""
    for rule in _password_rules:
        reason = rule(tenant)
        if reason is not None:
            return reason
    return None


def sign_in_finish(
    request: HttpRequest,
    user: AbstractBaseUser,
    principal: Principal,
    *,
    method: str,
    next_url: str,
) -> HttpResponse:
    """The first factor (`method`: "password", "sso", ...) has passed: divert to a registered
    further step if one applies, else start the session."""
    for step in _second_steps:
        diverted = step(request, user, principal, method, next_url)
        if diverted is not None:
            return diverted
    return sign_in_complete(request, user, principal, method=method, next_url=next_url)


def sign_in_complete(
    request: HttpRequest,
    user: AbstractBaseUser,
    principal: Principal,
    *,
    method: str,
    next_url: str,
    details: dict[str, str] | None = None,
) -> HttpResponse:
    """Start the session (Django's login rotates the session key) and audit `auth.login`."""
    login(request, cast(User, user), backend="django.contrib.auth.backends.ModelBackend")
    audit_context.update(actor=principal.actor, role=principal.role)
    audit_record(action="auth.login", details={"method": method, **(details or {})})
    return redirect(next_url)
