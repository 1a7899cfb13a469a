"""URLs of a tenant host (<tenant>.<base domain>): the tenant console and API."""

from django.urls import URLPattern, URLResolver, include, path

from apps.keychain import views as keychain_views
from apps.rotation import urls_console as rotation_console
from apps.tenants import api as tenants_api
from apps.tenants import api_invitations, views_invitations
from apps.tenants import views as tenants_views
from kms_project.urls_common import handler400, handler403, handler404, handler500
from kms_project.urls_common import urlpatterns as common

console: list[URLPattern | URLResolver] = [
    path("", keychain_views.dashboard, name="dashboard"),
    path("login/", tenants_views.login_view, name="login"),
    path("logout/", tenants_views.logout_view, name="logout"),
    path("members/", tenants_views.members, name="members"),
    path("members/<int:membership_id>/role/", tenants_views.member_role, name="member-role"),
    path("members/<int:membership_id>/remove/", tenants_views.member_remove, name="member-remove"),
    path("members/invitations/", views_invitations.invitation_list, name="invitations"),
    path(
        "members/invitations/<int:invitation_id>/revoke/",
        views_invitations.invitation_revoke,
        name="invitation-revoke",
    ),
    # The page an invitation link opens: for people who are not members yet.
    path("invitations/<str:secret>/", views_invitations.invitation_open, name="invitation"),
    path("tokens/", tenants_views.tokens, name="tokens"),
    path("tokens/<int:token_id>/revoke/", tenants_views.token_revoke, name="token-revoke"),
    path("audit/", include("apps.audit.urls_console")),
    path("keys/", include(rotation_console.chain_urlpatterns)),
    path("keys/", include("apps.keychain.urls_console")),
    path("rotation/", include("apps.rotation.urls_console")),
    path("approvals/", include("apps.approvals.urls_console")),
    path("mfa/", include("apps.mfa.urls_console")),
    path("sso/", include("apps.sso.urls_console")),
]

api_v1: list[URLPattern | URLResolver] = [
    path("me/", tenants_api.MeView.as_view(), name="me"),
    path("members/", tenants_api.MemberListView.as_view(), name="members"),
    path("members/<int:membership_id>/", tenants_api.MemberDetailView.as_view(), name="member"),
    path("invitations/", api_invitations.InvitationListView.as_view(), name="invitations"),
    path(
        "invitations/<int:invitation_id>/",
        api_invitations.InvitationDetailView.as_view(),
        name="invitation",
    ),
    path("tokens/", tenants_api.TokenListView.as_view(), name="tokens"),
    path("tokens/<int:token_id>/", tenants_api.TokenDetailView.as_view(), name="token"),
    path("", include("apps.audit.urls_api")),
    path("", include("apps.keychain.urls_api")),
    path("", include("apps.rotation.urls_api")),
    path("", include("apps.approvals.urls_api")),
    path("", include("apps.mfa.urls_api")),
    path("", include("apps.sso.urls_api")),
]

urlpatterns = [
    *common,
    path("api/v1/", include((api_v1, "api"))),
    path("", include((console, "console"))),
]

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]
