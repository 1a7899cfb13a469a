"""Console pages for sign-in, members, API tokens and (on the platform) tenants."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate, logout
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.audit import context as audit_context
from apps.audit.models import Outcome
from apps.audit.services import audit_record
from apps.core.approvals import console_gate
from apps.core.console import console_view, invalid_form, run_action
from apps.core.errors import KcmError
from apps.core.roles import TENANT_ROLES, Role
from apps.core.tenancy import Principal
from apps.tenants import selectors, services
from apps.tenants.access import current_tenant, principal_for_user
from apps.tenants.forms import (
    ReasonForm,
    RoleForm,
    TenantForm,
    TokenForm,
    grant_initial,
)
from apps.tenants.forms_invitations import InvitationForm
from apps.tenants.signin import password_refusal, sign_in_finish
from apps.tenants.tokens import api_token_create, api_token_revoke

ANY_ROLE = [*TENANT_ROLES, Role.PLATFORM_OPERATOR]


@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    """Sign in. Failures are counted per username and per client address by django-axes
    (AxesStandaloneBackend); past KCM_LOGIN_FAILURE_LIMIT even the right password is refused
    until the lockout ends (login_locked_out)."""
    error = ""
    next_url = request.POST.get("next") or request.GET.get("next") or reverse("console:dashboard")
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = reverse("console:dashboard")
    refusal = password_refusal(current_tenant())
    if request.method == "POST" and refusal is not None:
        error = refusal
        audit_record(
            action="auth.login_failed",
            outcome=Outcome.DENIED,
            error_code="local_passwords_off",
            details={"username": request.POST.get("username", "")[:150]},
            chained=False,
        )
    elif request.method == "POST":
        user = authenticate(
            request,
            username=request.POST.get("username", ""),
            password=request.POST.get("password", ""),
        )
        principal = principal_for_user(user, current_tenant()) if user is not None else None
        if principal is None or user is None:
            # One message for both: do not reveal which usernames exist or belong here.
            error = "Unknown user, wrong password, or no access to this tenant."
            if getattr(request, "axes_locked_out", False):
                code = "locked_out"
            else:
                code = "invalid_credentials" if user is None else "not_a_member"
            # Not chained here: a flood of failures must not queue on the audit chain's lock.
            audit_record(
                action="auth.login_failed",
                outcome=Outcome.DENIED,
                error_code=code,
                details={"username": request.POST.get("username", "")[:150]},
                chained=False,
            )
        else:
            return sign_in_finish(request, user, principal, method="password", next_url=next_url)
    return render(
        request,
        "console/login.html",
        {"error": error, "next": next_url, "passwords_off": refusal is not None},
        status=(403 if refusal is not None else 400) if error else 200,
    )


def login_locked_out(
    request: HttpRequest, response: HttpResponse | None, credentials: dict[str, Any] | None
) -> HttpResponse:
    """django-axes' answer while a username or address is locked out (AXES_LOCKOUT_CALLABLE)."""
    seconds = settings.KCM_LOGIN_LOCKOUT_SECONDS
    minutes = max(1, round(seconds / 60))
    locked = render(
        request,
        "console/login.html",
        {
            "error": f"Too many failed sign-ins. Try again in {minutes} minute(s).",
            "next": reverse("console:dashboard"),
        },
        status=429,
    )
    locked["Retry-After"] = str(seconds)
    return locked


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        audit_context.update(actor=f"user:{request.user.get_username()}")
        audit_record(action="auth.logout")
    logout(request)
    return redirect("console:login")


@console_view(ANY_ROLE)
def dashboard(request: HttpRequest) -> HttpResponse:
    """The platform console's home (a tenant's is the key chain's: apps.keychain.views)."""
    return render(request, "console/dashboard.html", {"tenants": selectors.tenant_list()})


def _principal(request: HttpRequest) -> Principal:
    return request.kcm_principal  # type: ignore[attr-defined]


@console_view([Role.TENANT_ADMIN])
@require_GET
def members(request: HttpRequest) -> HttpResponse:
    """This tenant's members, and the form that invites more (people join by invitation only:
    apps.tenants.views_invitations)."""
    tenant = current_tenant()
    principal = _principal(request)
    rows = [
        {
            "member": m,
            "form": RoleForm(
                initial={"roles": m.roles, **grant_initial(m.key_grant)},
                held=principal.roles,
                prefix=f"m{m.pk}",
            ),
            "kept": sorted(set(m.roles) - principal.roles),
            "is_self": m.user_id == principal.user_id,
        }
        for m in selectors.membership_list(tenant=tenant)
    ]
    invite = InvitationForm(held=principal.roles)
    return render(request, "console/members.html", {"invite_form": invite, "rows": rows})


@console_view([Role.TENANT_ADMIN])
@require_POST
def member_role(request: HttpRequest, membership_id: int) -> HttpResponse:
    """Change a member's roles and grant. The form edits only the roles the actor holds; the
    member's other roles are kept. A blank grant keeps the member's grant."""
    principal = _principal(request)
    tenant = current_tenant()
    form = RoleForm(request.POST, held=principal.roles, prefix=f"m{membership_id}")
    if not form.is_valid():
        return run_action(
            request,
            invalid_form(form),
            "",
            reverse("console:members"),
            audit_action="member.role_change",
        )

    member = selectors.membership_list(tenant=tenant).filter(pk=membership_id).first()
    kept = set(member.roles) - principal.roles if member is not None else set()
    roles = set(form.cleaned_data["roles"]) | kept
    grant = form.cleaned_data["key_grant"]
    given = {"key_grant": grant} if grant is not None else {}
    # Granting key_admin or tenant_admin may need approval (the tenant's policy).
    gated = console_gate(
        request,
        action="member.role_change",
        target=str(membership_id),
        params=services.member_change_params(roles=roles, **given),
        next_url=reverse("console:members"),
    )
    if gated is not None:
        return gated

    def change() -> object:
        return services.member_update(
            tenant=tenant, membership_id=membership_id, actor=principal, roles=roles, **given
        )

    return run_action(
        request,
        change,
        "Roles changed.",
        reverse("console:members"),
        audit_action="member.role_change",
    )


@console_view([Role.TENANT_ADMIN])
@require_POST
def member_remove(request: HttpRequest, membership_id: int) -> HttpResponse:
    return run_action(
        request,
        lambda: services.membership_remove(
            tenant=current_tenant(), membership_id=membership_id, acting=_principal(request)
        ),
        "Member removed.",
        reverse("console:members"),
        audit_action="member.remove",
    )


@console_view([Role.TENANT_ADMIN, Role.PLATFORM_OPERATOR])
def tokens(request: HttpRequest) -> HttpResponse:
    tenant = current_tenant()
    principal = _principal(request)
    form = TokenForm(request.POST or None, held=principal.roles, platform=tenant.is_platform)
    created = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            token, created = api_token_create(
                tenant=tenant,
                name=data["name"],
                role=data["role"],
                key_grant=data.get("key_grant"),
                expires_at=data.get("expires_at"),
                created_by_id=request.user.pk,
                actor=principal,
            )
        except KcmError as exc:
            audit_record(action="token.create", outcome="error", error_code=exc.code)
            messages.error(request, exc.detail)
        else:
            form = TokenForm(held=principal.roles, platform=tenant.is_platform)
            messages.success(request, f"Token {token.name} created. Copy it now: it is shown once.")
    return render(
        request,
        "console/tokens.html",
        {
            "form": form,
            "tokens": selectors.api_token_list(tenant=tenant).order_by("-created_at"),
            "created": created,
        },
    )


@console_view([Role.TENANT_ADMIN, Role.PLATFORM_OPERATOR])
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    return run_action(
        request,
        lambda: api_token_revoke(tenant=current_tenant(), token_id=token_id),
        "Token revoked.",
        reverse("console:tokens"),
        audit_action="token.revoke",
    )


@console_view([Role.PLATFORM_OPERATOR])
def tenants(request: HttpRequest) -> HttpResponse:
    form = TenantForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        return run_action(
            request,
            lambda: services.tenant_create(slug=data["slug"], name=data["name"]),
            f"Tenant {data['slug']} created.",
            reverse("console:tenants"),
            audit_action="tenant.create",
        )
    return render(
        request,
        "console/tenants.html",
        {"form": form, "tenants": selectors.tenant_list(), "reason_form": ReasonForm()},
    )


@console_view([Role.PLATFORM_OPERATOR])
@require_POST
def tenant_action(request: HttpRequest, slug: str, action: str) -> HttpResponse:
    if action not in {"suspend", "resume", "terminate"}:
        raise Http404
    reason = ReasonForm(request.POST).data.get("reason", "")[:500]
    if action == "terminate":
        # KCM_PLATFORM_APPROVALS_REQUIRED may make it wait for other operators.
        gated = console_gate(
            request,
            action="tenant.terminate",
            target=slug,
            params={"reason": reason},
            next_url=reverse("console:tenants"),
        )
        if gated is not None:
            return gated

    def act() -> object:
        tenant = services.tenant_get(slug=slug)
        if action == "suspend":
            return services.tenant_suspend(tenant=tenant, reason=reason)
        if action == "resume":
            return services.tenant_resume(tenant=tenant)
        return services.tenant_terminate(tenant=tenant, reason=reason)

    return run_action(
        request,
        act,
        f"Tenant {slug}: {action} done.",
        reverse("console:tenants"),
        audit_action=f"tenant.{action}",
    )
