"""Console pages for sign-in, members, API tokens and (on the platform) tenants."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import authenticate, login, logout
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from apps.core.console import console_view, run_action
from apps.core.errors import KcmError
from apps.tenants import selectors, services
from apps.tenants.access import current_tenant, principal_for_user
from apps.tenants.forms import (
    MemberForm,
    PlatformTokenForm,
    ReasonForm,
    RoleForm,
    TenantForm,
    TokenForm,
)
from apps.tenants.models import TENANT_ROLES, Role

ANY_ROLE = [*TENANT_ROLES, Role.PLATFORM_OPERATOR]


@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    error = ""
    next_url = request.POST.get("next") or request.GET.get("next") or reverse("console:dashboard")
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = reverse("console:dashboard")
    if request.method == "POST":
        user = authenticate(
            request,
            username=request.POST.get("username", ""),
            password=request.POST.get("password", ""),
        )
        if user is None or principal_for_user(user, current_tenant()) is None:
            # One message for both: do not reveal which usernames exist or belong here.
            error = "Unknown user, wrong password, or no access to this tenant."
        else:
            login(request, user)
            return redirect(next_url)
    return render(
        request,
        "console/login.html",
        {"error": error, "next": next_url},
        status=400 if error else 200,
    )


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("console:login")


@console_view(ANY_ROLE)
def dashboard(request: HttpRequest) -> HttpResponse:
    tenant = current_tenant()
    context: dict[str, object] = {}
    if tenant.is_platform:
        context["tenants"] = selectors.tenant_list()
    else:
        from apps.keychain.selectors import chain_summary

        context["summary"] = chain_summary()
    return render(request, "console/dashboard.html", context)


@console_view([Role.TENANT_ADMIN])
def members(request: HttpRequest) -> HttpResponse:
    tenant = current_tenant()
    form = MemberForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        return run_action(
            request,
            lambda: services.member_add(
                tenant=tenant,
                username=data["username"],
                email=data["email"],
                password=data["password"] or None,
                role=data["role"],
            ),
            f"{data['username']} is now a member.",
            reverse("console:members"),
        )
    return render(
        request,
        "console/members.html",
        {
            "form": form,
            "members": selectors.membership_list(tenant=tenant),
            "role_form": RoleForm(),
        },
    )


@console_view([Role.TENANT_ADMIN])
@require_POST
def member_role(request: HttpRequest, membership_id: int) -> HttpResponse:
    tenant = current_tenant()
    form = RoleForm(request.POST)
    membership = selectors.membership_list(tenant=tenant).filter(pk=membership_id).first()
    if membership is None or not form.is_valid():
        messages.error(request, "No such member or role.")
        return redirect("console:members")
    return run_action(
        request,
        lambda: services.membership_set(
            tenant=tenant,
            user=membership.user,
            role=form.cleaned_data["role"],
        ),
        "Role changed.",
        reverse("console:members"),
    )


@console_view([Role.TENANT_ADMIN])
@require_POST
def member_remove(request: HttpRequest, membership_id: int) -> HttpResponse:
    return run_action(
        request,
        lambda: services.membership_remove(
            tenant=current_tenant(),
            membership_id=membership_id,
            acting=request.kcm_principal,  # type: ignore[attr-defined]
        ),
        "Member removed.",
        reverse("console:members"),
    )


@console_view([Role.TENANT_ADMIN, Role.PLATFORM_OPERATOR])
def tokens(request: HttpRequest) -> HttpResponse:
    tenant = current_tenant()
    form_class = PlatformTokenForm if tenant.is_platform else TokenForm
    form = form_class(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            token, created = services.api_token_create(
                tenant=tenant,
                name=data["name"],
                role=data["role"],
                expires_at=data.get("expires_at"),
                created_by_id=request.user.pk,
            )
        except KcmError as exc:
            messages.error(request, exc.detail)
        else:
            form = form_class()
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
        lambda: services.api_token_revoke(tenant=current_tenant(), token_id=token_id),
        "Token revoked.",
        reverse("console:tokens"),
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

    def act() -> object:
        tenant = services.tenant_get(slug=slug)
        if action == "suspend":
            return services.tenant_suspend(tenant=tenant, reason=reason)
        if action == "resume":
            return services.tenant_resume(tenant=tenant)
        return services.tenant_terminate(tenant=tenant, reason=reason)

    return run_action(request, act, f"Tenant {slug}: {action} done.", reverse("console:tenants"))
