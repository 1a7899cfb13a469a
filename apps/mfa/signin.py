"""The second sign-in step and step-up, on the session.

A sign-in whose first factor passed, for a person with a second factor, is held in the session
as `kcm_mfa_pending` (who, how, where to) WITHOUT logging in; the verify page completes it
through apps.tenants.signin.sign_in_complete. `kcm_mfa_verified_at` records when the session's
person last passed a second factor (sign-in, enrolment or step-up)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from apps.audit.services import audit_record
from apps.core.tenancy import Principal
from apps.mfa import services
from apps.tenants.access import current_tenant, person_of, principal_for_user
from apps.tenants.signin import sign_in_complete

PENDING = "kcm_mfa_pending"
VERIFIED_AT = "kcm_mfa_verified_at"
PENDING_SECONDS = 300
PENDING_ATTEMPTS = 5
CODE_HEADER = "HTTP_X_KCM_MFA_CODE"


def second_step(
    request: HttpRequest, user: AbstractBaseUser, principal: Principal, method: str, next_url: str
) -> HttpResponse | None:
    """The hook (apps.tenants.signin): divert a person with a factor to the verify page."""
    if not services.has_factor(user.pk):
        return None  # must-enrol is enforced after sign-in by apps.mfa.middleware
    request.session.cycle_key()
    request.session[PENDING] = {
        "user_id": user.pk,
        "tenant_id": principal.tenant_id,
        "method": method,
        "next": next_url,
        "started": time.time(),
        "attempts": 0,
    }
    return redirect("console:mfa-verify")


def pending_user(request: HttpRequest) -> Any | None:
    """The user of a pending sign-in in this tenant that has not expired, else None."""
    pending = request.session.get(PENDING)
    if not pending:
        return None
    fresh = time.time() - pending.get("started", 0) < PENDING_SECONDS
    if not fresh or pending.get("tenant_id") != current_tenant().pk:
        request.session.pop(PENDING, None)
        return None
    return get_user_model().objects.filter(pk=pending["user_id"], is_active=True).first()


def pending_failed(request: HttpRequest) -> None:
    """A wrong factor on the verify page: after a few the pending sign-in is dropped."""
    pending = request.session.get(PENDING) or {}
    pending["attempts"] = pending.get("attempts", 0) + 1
    if pending["attempts"] >= PENDING_ATTEMPTS:
        request.session.pop(PENDING, None)
    else:
        request.session[PENDING] = pending


def pending_complete(request: HttpRequest, user: Any, factor: str) -> HttpResponse:
    """The second factor passed: start the session as the first factor asked."""
    pending = request.session.pop(PENDING)
    principal = principal_for_user(user, current_tenant())
    if principal is None:  # removed from the tenant in the meantime
        return redirect("console:login")
    response = sign_in_complete(
        request,
        user,
        principal,
        method=pending["method"],
        next_url=pending["next"],
        details={"second_factor": factor},
    )
    request.session[VERIFIED_AT] = time.time()
    return response


def mark_verified(request: HttpRequest) -> None:
    request.session[VERIFIED_AT] = time.time()


def fresh(request: HttpRequest) -> bool:
    at = request.session.get(VERIFIED_AT) if hasattr(request, "session") else None
    return at is not None and time.time() - float(at) < services.STEP_UP_SECONDS


def safe_next(request: HttpRequest, default: str) -> str:
    next_url = request.POST.get("next") or request.GET.get("next") or default
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        return default
    return next_url


# --- step-up: called by apps.approvals before approve and deny ----------------------------

STEP_UP_DECISIONS = ("approve", "deny")


def step_up_for_decision(request: HttpRequest, action: str, next_url: str) -> HttpResponse | None:
    """Console: approving or denying needs a second factor verified in the last 5 minutes
    (when the person has a factor or must have one); None lets the decision go on."""
    if action not in STEP_UP_DECISIONS:
        return None
    return step_up_console(request, next_url)


def step_up_console(
    request: HttpRequest, next_url: str, *, always: bool = False
) -> HttpResponse | None:
    """None if the signed-in person may go on now; else a redirect to the step-up page that
    returns to `next_url`. Approvals need it when the person has a factor or must have one;
    with `always` (changing one's own factors) whenever the person has a factor."""
    principal: Principal = request.kcm_principal  # type: ignore[attr-defined]
    if fresh(request):
        return None
    user_id = int(request.user.pk or 0)
    needed = (
        services.has_factor(user_id) if always else services.step_up_applies(principal, user_id)
    )
    if not needed:
        return None
    return redirect(f"{reverse('console:mfa-step-up')}?{urlencode({'next': next_url})}")


def step_up_api(request: Any, principal: Principal, action: str) -> None:
    """For the API's approve and deny: a console session passes if its factor is fresh;
    otherwise (and for tokens) the header X-KCM-MFA-Code must carry a current code of the
    token's person. Raises StepUpRequired (403 mfa_step_up_required), InvalidCode or MfaLocked."""
    if action in STEP_UP_DECISIONS:
        step_up_api_check(request, principal)


def step_up_api_check(request: Any, principal: Principal) -> None:
    """The API's step-up (see step_up_api), for any sensitive call."""
    person = person_of(principal)
    if person is None or not services.step_up_applies(principal, person):
        return
    if principal.kind == "user" and fresh(request):
        return
    code = request.META.get(CODE_HEADER, "")
    if not code:
        raise services.StepUpRequired(
            "This needs a fresh second factor: send a current code of your "
            "authenticator in the X-KCM-MFA-Code header."
        )
    if not services.has_factor(person):
        raise services.StepUpRequired("Enrol a second factor in the console first.")
    services.code_verify(user_id=person, code=code, purpose="step_up")
    audit_record(action="mfa.step_up", details={"via": "api"})
