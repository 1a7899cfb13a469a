"""Console pages of single sign-on: the sign-in round trip through the tenant's provider
(public: for people not signed in) and the settings page (tenant admins)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods

from apps.audit.models import Outcome
from apps.audit.services import audit_record
from apps.core.clientip import client_ip
from apps.core.console import console_view
from apps.core.errors import KcmError
from apps.core.roles import Role
from apps.core.throttling import buckets, network_of
from apps.sso import services
from apps.sso.errors import SsoRefused
from apps.sso.forms import ProviderForm
from apps.sso.selectors import provider_get
from apps.tenants.access import current_tenant
from apps.tenants.signin import sign_in_finish

# The state cookie: Lax (the provider's redirect back is a cross-site top-level GET, which a
# Strict session cookie does not survive), signed, HttpOnly, only sent to /sso/.
STATE_COOKIE = "kcm_sso_state"
_SALT = "kcm.sso.state"
# Sign-ins one client address may start a minute: each stores a row until it returns.
STARTS_PER_MINUTE = 20


def _callback_uri(request: HttpRequest) -> str:
    return request.build_absolute_uri(reverse("console:sso-callback"))


def _next_of(request: HttpRequest) -> str:
    wanted = request.POST.get("next") or request.GET.get("next") or ""
    if not wanted or not url_has_allowed_host_and_scheme(
        wanted, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return reverse("console:dashboard")
    return wanted


def _refused(request: HttpRequest, exc: KcmError, email: str = "") -> HttpResponse:
    audit_record(
        action="auth.login_failed",
        outcome=Outcome.DENIED if exc.status < 500 else Outcome.ERROR,
        error_code=exc.code,
        details={"method": "sso", **({"email": email} if email else {})},
        chained=False,
    )
    response = render(
        request,
        "sso/refused.html",
        {"detail": exc.detail, "code": exc.code},
        status=exc.status,
    )
    response.delete_cookie(STATE_COOKIE, path=reverse("console:sso-login").rsplit("login/", 1)[0])
    return response


@require_GET
def sso_login(request: HttpRequest) -> HttpResponse:
    """Send the browser to the provider. A link, not a form: the console's CSP allows forms to
    post only to us, and Chromium applies that to a form's redirect too. Another site starting
    a sign-in here gains nothing: the callback signs in only the browser that holds the state
    cookie, as whoever that browser is at the provider."""
    address = client_ip(request)
    if address and buckets.take(f"sso-start:{network_of(address)}", STARTS_PER_MINUTE, 60.0):
        too_many = SsoRefused("Too many sign-ins started; wait a minute.", code="throttled")
        too_many.status = 429
        return _refused(request, too_many)
    try:
        started = services.signin_start(
            tenant=current_tenant(),
            redirect_uri=_callback_uri(request),
            next_url=_next_of(request),
        )
    except KcmError as exc:
        return _refused(request, exc)
    response = redirect(started.url)
    response.set_signed_cookie(
        STATE_COOKIE,
        started.state,
        salt=_SALT,
        max_age=int(services.LOGIN_TTL.total_seconds()),
        path=reverse("console:sso-login").rsplit("login/", 1)[0],
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Lax",
    )
    return response


@require_GET
def sso_callback(request: HttpRequest) -> HttpResponse:
    """The provider's redirect back: verify, establish the member, then the common sign-in
    end (apps.tenants.signin: a second factor may follow)."""
    browser_state = request.get_signed_cookie(
        STATE_COOKIE, default="", salt=_SALT, max_age=services.LOGIN_TTL
    )
    try:
        signed = services.signin_complete(
            tenant=current_tenant(),
            state=request.GET.get("state", ""),
            browser_state=browser_state or "",
            code=request.GET.get("code", ""),
            error=request.GET.get("error", ""),
            redirect_uri=_callback_uri(request),
        )
    except KcmError as exc:
        return _refused(request, exc)
    finished = sign_in_finish(
        request, signed.user, signed.principal, method="sso", next_url=signed.next_url
    )
    finished.delete_cookie(STATE_COOKIE, path=reverse("console:sso-login").rsplit("login/", 1)[0])
    if finished.status_code in (301, 302, 303):
        # This request came from the provider's site: a browser does not send the Strict
        # session cookie on redirects of that navigation. A page of ours moves on instead.
        target = finished["Location"]
        page = render(request, "sso/continue.html", {"target": target})
        for cookie in finished.cookies.values():
            page.cookies[cookie.key] = cookie
        return page
    return finished


@console_view([Role.TENANT_ADMIN])
@require_http_methods(["GET", "POST"])
def sso_settings(request: HttpRequest) -> HttpResponse:
    tenant = current_tenant()
    provider = provider_get(tenant=tenant)
    form = ProviderForm(request.POST or None, provider=provider)
    if request.method == "POST":
        if form.is_valid():
            try:
                services.provider_set(tenant=tenant, **form.service_kwargs())
            except KcmError as exc:
                audit_record(action="sso.update", outcome=Outcome.ERROR, error_code=exc.code)
                messages.error(request, exc.detail)
            else:
                messages.success(request, "Single sign-on settings saved.")
                return redirect("console:sso-settings")
        else:
            messages.error(request, f"Please correct the form: {form.errors.as_text()}")
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "sso/settings.html",
        {"form": form, "provider": provider, "callback": _callback_uri(request)},
        status=status,
    )
