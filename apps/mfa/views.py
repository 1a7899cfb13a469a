"""Console pages of multi-factor sign-in: the person's factors (enrol, remove, recovery codes),
the tenant's MFA setting, the second sign-in step and the step-up page. The passkey endpoints
answer JSON to static/mfa/webauthn.js."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from apps.audit import context as audit_context
from apps.audit.services import audit_record
from apps.core.console import console_view, run_action
from apps.core.errors import KcmError, problem_response
from apps.core.roles import TENANT_ROLES, Role
from apps.mfa import passkeys, services, signin
from apps.mfa.forms import CodeForm, DeviceNameForm, PolicyForm
from apps.mfa.middleware import mfa_exempt
from apps.mfa.models import DeviceKind, MfaDevice
from apps.tenants.access import current_tenant, principal_for_user

ANY_ROLE = [*TENANT_ROLES, Role.PLATFORM_OPERATOR]


def _uid(request: HttpRequest) -> int:
    return int(request.user.pk or 0)  # console views run for signed-in users only


def _is_platform() -> bool:
    return current_tenant().schema_name == "public"


@mfa_exempt
@console_view(ANY_ROLE)
def manage(request: HttpRequest) -> HttpResponse:
    principal = request.kcm_principal  # type: ignore[attr-defined]
    user_id = _uid(request)
    policy_editable = not _is_platform() and Role.TENANT_ADMIN in principal.roles
    return render(
        request,
        "mfa/manage.html",
        {
            "devices": MfaDevice.objects.filter(user_id=user_id, confirmed=True),
            "recovery_left": services.recovery_codes_left(user_id),
            "must_enrol": services.mfa_required(principal) and not services.has_factor(user_id),
            "policy_editable": policy_editable,
            "require_for_admins": (
                services.policy_requires(principal.tenant_id) if not _is_platform() else False
            ),
        },
    )


@mfa_exempt
@console_view(ANY_ROLE)
@require_POST
def totp_start(request: HttpRequest) -> HttpResponse:
    form = DeviceNameForm(request.POST)
    name = form.cleaned_data["name"] if form.is_valid() else ""
    try:
        device = services.totp_enrol_begin(user_id=_uid(request), name=name)
    except KcmError as exc:
        messages.error(request, exc.detail)
        return redirect("console:mfa")
    return redirect("console:mfa-totp", device_uid=device.uid)


@mfa_exempt
@console_view(ANY_ROLE)
@require_http_methods(["GET", "POST"])
def totp_confirm(request: HttpRequest, device_uid: str) -> HttpResponse:
    try:
        device = services.totp_pending(user_id=_uid(request), device_uid=device_uid)
        seed, uri = services.totp_provisioning(device, account=request.user.get_username())
    except KcmError as exc:
        messages.error(request, exc.detail)
        return redirect("console:mfa")
    error, status = "", 200
    if request.method == "POST":
        form = CodeForm(request.POST)
        try:
            if not form.is_valid():
                raise services.InvalidCode("Enter the 6-digit code of your app.")
            codes = services.totp_enrol_confirm(
                user_id=_uid(request), device_uid=device_uid, code=form.cleaned_data["code"]
            )
        except KcmError as exc:
            error, status = exc.detail, exc.status
        else:
            signin.mark_verified(request)
            messages.success(request, "Authenticator app enrolled.")
            return _after_enrol(request, codes)
    return render(
        request,
        "mfa/totp.html",
        {"device": device, "seed": seed, "uri": uri, "error": error},
        status=status,
    )


def _after_enrol(request: HttpRequest, codes: list[str] | None) -> HttpResponse:
    if codes:
        return render(request, "mfa/recovery.html", {"codes": codes})
    return redirect("console:mfa")


@mfa_exempt
@console_view(ANY_ROLE)
@require_POST
def device_remove(request: HttpRequest, device_uid: str) -> HttpResponse:
    """Removing a factor needs a fresh one (else the step-up page first)."""
    diverted = signin.step_up_console(request, reverse("console:mfa"), always=True)
    if diverted is not None:
        return diverted
    return run_action(
        request,
        lambda: services.device_remove(user_id=_uid(request), device_uid=device_uid),
        "Factor removed.",
        reverse("console:mfa"),
        audit_action="mfa.remove",
    )


@mfa_exempt
@console_view(ANY_ROLE)
@require_POST
def recovery_regenerate(request: HttpRequest) -> HttpResponse:
    diverted = signin.step_up_console(request, reverse("console:mfa"), always=True)
    if diverted is not None:
        return diverted
    try:
        codes = services.recovery_codes_regenerate(user_id=_uid(request))
    except KcmError as exc:
        messages.error(request, exc.detail)
        return redirect("console:mfa")
    return render(request, "mfa/recovery.html", {"codes": codes})


@console_view([Role.TENANT_ADMIN])
@require_POST
def policy_set(request: HttpRequest) -> HttpResponse:
    if _is_platform():
        return render(
            request,
            "console/refused.html",
            {"title": "Not here", "detail": "Operators' MFA is set by KCM_PLATFORM_REQUIRE_MFA."},
            status=404,
        )
    form = PolicyForm(request.POST)
    form.is_valid()
    require = bool(form.cleaned_data.get("require_for_admins"))
    principal = request.kcm_principal  # type: ignore[attr-defined]
    if not require:  # lifting the requirement needs a fresh factor, as approving does
        diverted = signin.step_up_console(request, reverse("console:mfa"))
        if diverted is not None:
            return diverted
    return run_action(
        request,
        lambda: services.policy_set(tenant_id=principal.tenant_id, require_for_admins=require),
        "MFA setting saved.",
        reverse("console:mfa"),
        audit_action="mfa.policy_set",
    )


# --- JSON endpoints of the passkey ceremonies -----------------------------------------------


def _json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise services.InvalidCode("The request is not JSON.", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise services.InvalidCode("The request is not a JSON object.", code="invalid_json")
    return body


def _problem(request: HttpRequest, exc: KcmError) -> JsonResponse:
    return problem_response(exc.status, exc.code, "Refused", exc.detail, request)


@mfa_exempt
@console_view(ANY_ROLE)
@require_POST
def passkey_register_options(request: HttpRequest) -> HttpResponse:
    return HttpResponse(
        passkeys.registration_options(request, user=request.user),
        content_type="application/json",
    )


@mfa_exempt
@console_view(ANY_ROLE)
@require_POST
def passkey_register(request: HttpRequest) -> HttpResponse:
    try:
        body = _json_body(request)
        credential = body.get("credential")
        if not isinstance(credential, dict):
            raise services.InvalidCode("No credential sent.", code="webauthn_invalid")
        _device, codes = passkeys.registration_verify(
            request, user=request.user, credential=credential, name=str(body.get("name", ""))
        )
    except KcmError as exc:
        return _problem(request, exc)
    signin.mark_verified(request)
    if codes:
        request.session["kcm_mfa_codes"] = codes  # shown once by recovery_show, then dropped
        return JsonResponse({"redirect": reverse("console:mfa-recovery-show")})
    messages.success(request, "Passkey registered.")
    return JsonResponse({"redirect": reverse("console:mfa")})


@mfa_exempt
@console_view(ANY_ROLE)
def recovery_show(request: HttpRequest) -> HttpResponse:
    codes = request.session.pop("kcm_mfa_codes", None)
    if not codes:
        return redirect("console:mfa")
    messages.success(request, "Passkey registered.")
    return render(request, "mfa/recovery.html", {"codes": codes})


def _who(request: HttpRequest) -> tuple[int, str] | None:
    """Whose passkey is being checked: a pending sign-in's person, or the signed-in one."""
    user = signin.pending_user(request)
    if user is not None:
        audit_context.update(actor=f"user:{user.get_username()}")
        return user.pk, "sign_in"
    if request.user.is_authenticated and principal_for_user(request.user, current_tenant()):
        return _uid(request), "step_up"
    return None


@require_POST
def passkey_auth_options(request: HttpRequest) -> HttpResponse:
    who = _who(request)
    if who is None:
        return _problem(request, services.InvalidCode("Sign in first.", code="mfa_no_sign_in"))
    return HttpResponse(
        passkeys.authentication_options(request, user_id=who[0], purpose=who[1]),
        content_type="application/json",
    )


@require_POST
def passkey_auth(request: HttpRequest) -> HttpResponse:
    who = _who(request)
    if who is None:
        return _problem(request, services.InvalidCode("Sign in first.", code="mfa_no_sign_in"))
    user_id, purpose = who
    try:
        body = _json_body(request)
        credential = body.get("credential")
        if not isinstance(credential, dict):
            raise services.InvalidCode("No credential sent.", code="webauthn_invalid")
        passkeys.authentication_verify(
            request, user_id=user_id, credential=credential, purpose=purpose
        )
    except KcmError as exc:
        if purpose == "sign_in":
            signin.pending_failed(request)
        return _problem(request, exc)
    if purpose == "sign_in":
        user = signin.pending_user(request)
        response = signin.pending_complete(request, user, "webauthn")
        return JsonResponse({"redirect": response["Location"]})
    signin.mark_verified(request)
    audit_record(action="mfa.step_up", details={"kind": "webauthn"})
    return JsonResponse({"redirect": signin.safe_next(request, reverse("console:dashboard"))})


# --- the second sign-in step and step-up ----------------------------------------------------


@require_http_methods(["GET", "POST"])
def verify(request: HttpRequest) -> HttpResponse:
    """Second sign-in step: a code (TOTP or recovery) or a passkey. Without a pending sign-in
    in this session there is nothing to verify: back to the sign-in page."""
    user = signin.pending_user(request)
    if user is None:
        return redirect("console:login")
    audit_context.update(actor=f"user:{user.get_username()}")  # who the failures are about
    error, status = "", 200
    if request.method == "POST":
        form = CodeForm(request.POST)
        try:
            if not form.is_valid():
                raise services.InvalidCode("Enter a code.")
            factor = services.code_verify(
                user_id=user.pk, code=form.cleaned_data["code"], purpose="sign_in"
            )
        except KcmError as exc:
            signin.pending_failed(request)
            error, status = exc.detail, exc.status
            if signin.pending_user(request) is None:
                messages.error(request, f"{exc.detail} Sign in again.")
                return redirect("console:login")
        else:
            return signin.pending_complete(request, user, factor)
    return render(
        request,
        "mfa/verify.html",
        {"error": error, "has_passkey": _has_passkey(user.pk), "step_up": False},
        status=status,
    )


def _has_passkey(user_id: int) -> bool:
    return MfaDevice.objects.filter(
        user_id=user_id, kind=DeviceKind.WEBAUTHN, confirmed=True
    ).exists()


@mfa_exempt
@console_view(ANY_ROLE)
@require_http_methods(["GET", "POST"])
def step_up(request: HttpRequest) -> HttpResponse:
    """Prove a second factor again (approvals, removing a factor): then back to `next`."""
    next_url = signin.safe_next(request, reverse("console:dashboard"))
    user_id = _uid(request)
    if not services.has_factor(user_id):
        messages.error(request, "Enrol a second factor first.")
        return redirect("console:mfa")
    error, status = "", 200
    if request.method == "POST":
        form = CodeForm(request.POST)
        try:
            if not form.is_valid():
                raise services.InvalidCode("Enter a code.")
            services.code_verify(user_id=user_id, code=form.cleaned_data["code"], purpose="step_up")
        except KcmError as exc:
            error, status = exc.detail, exc.status
        else:
            signin.mark_verified(request)
            audit_record(action="mfa.step_up", details={"kind": "code"})
            messages.success(request, "Second factor verified for the next 5 minutes.")
            return redirect(next_url)
    return render(
        request,
        "mfa/verify.html",
        {"error": error, "has_passkey": _has_passkey(user_id), "step_up": True, "next": next_url},
        status=status,
    )
