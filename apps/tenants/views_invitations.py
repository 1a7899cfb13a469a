"""Console pages of invitations: sending them (members of a tenant; a platform operator for a
tenant's first administrators), and the page the link opens, where the invitee signs in or
creates an account and joins. That page is for people who are not members yet, so it is not a
`console_view`; CSRF protects its forms as any other."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import authenticate, login
from django.contrib.auth.models import User
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from apps.audit import context as audit_context
from apps.audit.models import Outcome
from apps.audit.services import audit_record
from apps.core.console import console_view, run_action
from apps.core.errors import Forbidden, KcmError, ValidationFailed
from apps.core.roles import TENANT_ROLES, Role
from apps.core.signals import request_outcome_send
from apps.core.tenancy import Principal
from apps.tenants import invitations
from apps.tenants.access import current_tenant
from apps.tenants.api_invitations import link_origin
from apps.tenants.forms_invitations import InvitationForm, SignInForm, SignUpForm
from apps.tenants.models import Membership, Tenant
from apps.tenants.services import tenant_get

# --- sending ---------------------------------------------------------------------------


def _invitations_page(request: HttpRequest, tenant: Tenant, *, platform: bool) -> HttpResponse:
    principal: Principal = request.kcm_principal  # type: ignore[attr-defined]
    form = InvitationForm(request.POST or None, held=principal.roles)
    link = None
    if request.method == "POST":
        try:
            if not form.is_valid():
                raise ValidationFailed(f"Please correct the form: {form.errors.as_text()}")
            invitation, link = invitations.invitation_create(
                actor=principal,
                tenant=tenant,
                roles=form.cleaned_data["roles"],
                key_grant=form.cleaned_data.get("key_grant"),
                email=form.cleaned_data["email"],
                **link_origin(request),
            )
        except KcmError as exc:
            request_outcome_send(
                action="invitation.create",
                outcome="denied" if exc.status in (401, 403) else "error",
                error_code=exc.code,
                details={"path": request.path},
            )
            messages.error(request, exc.detail)
        else:
            form = InvitationForm(held=principal.roles)
            messages.success(
                request,
                f"Invitation to {', '.join(invitation.roles)} created. Copy the link now: it is "
                "shown once.",
            )
    return render(
        request,
        "console/invitations.html",
        {
            "form": form,
            "link": link,
            "invited_tenant": tenant,
            "platform": platform,
            "pending": invitations.invitation_list_pending(tenant=tenant, actor=principal),
        },
    )


@console_view(TENANT_ROLES)
def invitation_list(request: HttpRequest) -> HttpResponse:
    return _invitations_page(request, current_tenant(), platform=False)


@console_view(TENANT_ROLES)
@require_POST
def invitation_revoke(request: HttpRequest, invitation_id: int) -> HttpResponse:
    return run_action(
        request,
        lambda: invitations.invitation_revoke(
            tenant=current_tenant(),
            invitation_id=invitation_id,
            actor=request.kcm_principal,  # type: ignore[attr-defined]
        ),
        "Invitation revoked: its link no longer works.",
        reverse("console:invitations"),
        audit_action="invitation.revoke",
    )


def _tenant_or_404(slug: str) -> Tenant:
    try:
        return tenant_get(slug=slug)
    except KcmError:
        raise Http404 from None


@console_view([Role.PLATFORM_OPERATOR])
def tenant_invitation_list(request: HttpRequest, slug: str) -> HttpResponse:
    return _invitations_page(request, _tenant_or_404(slug), platform=True)


@console_view([Role.PLATFORM_OPERATOR])
@require_POST
def tenant_invitation_revoke(request: HttpRequest, slug: str, invitation_id: int) -> HttpResponse:
    return run_action(
        request,
        lambda: invitations.invitation_revoke(
            tenant=_tenant_or_404(slug),
            invitation_id=invitation_id,
            actor=request.kcm_principal,  # type: ignore[attr-defined]
        ),
        "Invitation revoked: its link no longer works.",
        reverse("console:tenant-invitations", args=[slug]),
        audit_action="invitation.revoke",
    )


# --- accepting -------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def invitation_open(request: HttpRequest, secret: str) -> HttpResponse:
    """The page an invitation link opens: sign in, or create an account, then join."""
    tenant = current_tenant()
    try:
        invitation = invitations.invitation_pending_get(tenant=tenant, secret=secret)
    except invitations.InvitationInvalid as exc:
        return render(
            request,
            "console/invitation.html",
            {"invalid": exc.detail},
            status=exc.status,
        )
    sign_in = SignInForm(request.POST if request.POST.get("how") == "sign-in" else None)
    sign_up = SignUpForm(request.POST if request.POST.get("how") == "sign-up" else None)
    error = ""
    if request.method == "POST":
        try:
            user = _join(request, tenant, secret, sign_in, sign_up)
        except KcmError as exc:
            error = exc.detail
        else:
            messages.success(request, f"Welcome, {user.get_username()}: you are now a member.")
            return redirect("console:dashboard")
    return render(
        request,
        "console/invitation.html",
        {"invitation": invitation, "sign_in": sign_in, "sign_up": sign_up, "error": error},
        status=400 if error else 200,
    )


def _join(
    request: HttpRequest, tenant: Tenant, secret: str, sign_in: SignInForm, sign_up: SignUpForm
) -> User:
    """Accept as the account signed in with, or as a new one; then start its session here."""
    how = request.POST.get("how")
    if how == "sign-up":
        if not sign_up.is_valid():
            raise ValidationFailed(f"Please correct: {sign_up.errors.as_text()}")
        data = sign_up.cleaned_data
        audit_context.update(actor=f"user:{data['new_username']}")
        membership: Membership = invitations.invitation_accept_new_user(
            tenant=tenant,
            secret=secret,
            username=data["new_username"],
            email=data["email"],
            password=data["new_password"],
        )
        user = membership.user
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    elif how == "sign-in" and sign_in.is_valid():
        username = sign_in.cleaned_data["username"]
        found = authenticate(request, username=username, password=sign_in.cleaned_data["password"])
        if not isinstance(found, User):
            # Counted by django-axes like any sign-in; chained later, as on the sign-in page.
            audit_record(
                action="auth.login_failed",
                outcome=Outcome.DENIED,
                error_code="invalid_credentials",
                details={"username": username[:150], "via": "invitation"},
                chained=False,
            )
            raise Forbidden("Unknown user or wrong password.", code="invalid_credentials")
        audit_context.update(actor=f"user:{found.get_username()}")
        invitations.invitation_accept(tenant=tenant, secret=secret, user=found)
        user = found
        login(request, user)
    else:
        raise ValidationFailed("Sign in, or create an account, to accept.")
    audit_record(action="auth.login")
    return user
