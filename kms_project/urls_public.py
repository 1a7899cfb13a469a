"""URLs of the base domain: the platform console and API (tenants, platform tokens)."""

from django.urls import URLPattern, URLResolver, include, path

from apps.approvals import urls_api as approvals_api
from apps.approvals import urls_console as approvals_console
from apps.tenants import api as tenants_api
from apps.tenants import api_invitations, views_invitations
from apps.tenants import views as tenants_views
from kms_project.health import PlatformHealthView
from kms_project.urls_common import handler400, handler403, handler404, handler500
from kms_project.urls_common import urlpatterns as common

console: list[URLPattern | URLResolver] = [
    path("", tenants_views.dashboard, name="dashboard"),
    path("login/", tenants_views.login_view, name="login"),
    path("logout/", tenants_views.logout_view, name="logout"),
    path("tokens/", tenants_views.tokens, name="tokens"),
    path("tokens/<int:token_id>/revoke/", tenants_views.token_revoke, name="token-revoke"),
    path("audit/", include("apps.audit.urls_console")),
    path("tenants/", tenants_views.tenants, name="tenants"),
    path("approvals/", include(approvals_console.platform_urlpatterns)),
    path("mfa/", include("apps.mfa.urls_console")),
    path(
        "tenants/<slug:slug>/invitations/",
        views_invitations.tenant_invitation_list,
        name="tenant-invitations",
    ),
    path(
        "tenants/<slug:slug>/invitations/<int:invitation_id>/revoke/",
        views_invitations.tenant_invitation_revoke,
        name="tenant-invitation-revoke",
    ),
    path(
        "tenants/<slug:slug>/<str:action>/",
        tenants_views.tenant_action,
        name="tenant-action",
    ),
]

api_v1: list[URLPattern | URLResolver] = [
    path("me/", tenants_api.MeView.as_view(), name="me"),
    path("tokens/", tenants_api.TokenListView.as_view(), name="tokens"),
    path("tokens/<int:token_id>/", tenants_api.TokenDetailView.as_view(), name="token"),
    path("", include("apps.audit.urls_api")),
    path("platform/health/", PlatformHealthView.as_view(), name="platform-health"),
    path("platform/tenants/", tenants_api.TenantListView.as_view(), name="tenants"),
    path("", include("apps.rotation.urls_platform")),
    path("", include(approvals_api.platform_urlpatterns)),
    path("platform/tenants/<slug:slug>/", tenants_api.TenantDetailView.as_view(), name="tenant"),
    path(
        "platform/tenants/<slug:slug>/invitations/",
        api_invitations.PlatformInvitationListView.as_view(),
        name="tenant-invitations",
    ),
    path(
        "platform/tenants/<slug:slug>/invitations/<int:invitation_id>/",
        api_invitations.PlatformInvitationDetailView.as_view(),
        name="tenant-invitation",
    ),
    *[
        path(
            f"platform/tenants/<slug:slug>/{action}/",
            tenants_api.TenantActionView.as_view(action=action),
            name=f"tenant-{action}",
        )
        for action in ("suspend", "resume", "terminate")
    ],
]

urlpatterns = [
    *common,
    path("api/v1/", include((api_v1, "api"))),
    path("", include((console, "console"))),
]

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]
