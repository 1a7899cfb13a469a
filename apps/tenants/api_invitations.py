"""Invitation API: on a tenant host for its members, on the base domain for platform operators
(a new tenant's first administrators). Views parse, call apps.tenants.invitations, render."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import KcmAPIView, StrictSerializer, parse, principal_of
from apps.core.roles import TENANT_ROLES, Role
from apps.tenants import invitations
from apps.tenants.access import current_tenant
from apps.tenants.api import KeyGrantField, PaginatedListMixin
from apps.tenants.models import Invitation, Tenant
from apps.tenants.services import tenant_get

ALL_TENANT_ROLES = frozenset(TENANT_ROLES)
PLATFORM = frozenset({Role.PLATFORM_OPERATOR})


class InvitationOut(serializers.ModelSerializer):
    roles = serializers.ListField(child=serializers.CharField())
    key_grant = KeyGrantField(allow_null=True, read_only=True)
    created_by = serializers.CharField(source="created_by.username", default=None, allow_null=True)

    class Meta:
        model = Invitation
        fields = ["id", "email", "roles", "key_grant", "created_by", "created_at", "expires_at"]


class InvitationCreated(InvitationOut):
    link = serializers.CharField(help_text="The invitation link. Shown once; send it now.")

    class Meta(InvitationOut.Meta):
        fields = [*InvitationOut.Meta.fields, "link"]


class InvitationIn(StrictSerializer):
    roles = serializers.ListField(
        child=serializers.ChoiceField(choices=[r.value for r in TENANT_ROLES]),
        min_length=1,
        max_length=len(TENANT_ROLES),
    )
    key_grant = KeyGrantField(required=False, allow_null=True)
    email = serializers.EmailField(
        required=False, allow_blank=True, help_text="Where you send the link: a note for you."
    )


def link_origin(request: HttpRequest) -> dict[str, str]:
    """The scheme and port the inviter reached us on (behind a TLS proxy, https and the port
    of the Host header): the invitee will reach the tenant's host the same way."""
    host = request.get_host()
    port = host.rsplit(":", 1)[1] if ":" in host and not host.endswith("]") else ""
    return {"scheme": request.scheme or "https", "port": port}


class _InvitationViewMixin:
    kwargs: dict[str, Any]

    def tenant(self) -> Tenant:
        slug = self.kwargs.get("slug")
        return tenant_get(slug=slug) if slug else current_tenant()

    def audit_target(self, request: Request, response: Response) -> tuple[str, int | None]:
        invitation_id = self.kwargs.get("invitation_id")
        return (f"invitation:{invitation_id}" if invitation_id else ""), None


class InvitationListView(_InvitationViewMixin, PaginatedListMixin, KcmAPIView):
    """Pending invitations (a tenant admin sees all, others those they sent) and new ones:
    anyone may invite to the roles they hold themselves."""

    allowed_roles = ALL_TENANT_ROLES
    audit_actions = {"POST": "invitation.create"}

    @extend_schema(responses=InvitationOut(many=True))
    def get(self, request: Request, **kwargs: Any) -> Response:
        pending = invitations.invitation_list_pending(
            tenant=self.tenant(), actor=principal_of(request)
        )
        return self.paginate(request, pending.select_related("created_by"), InvitationOut)

    @extend_schema(request=InvitationIn, responses={201: InvitationCreated})
    def post(self, request: Request, **kwargs: Any) -> Response:
        data = parse(InvitationIn, request)
        invitation, link = invitations.invitation_create(
            actor=principal_of(request),
            tenant=self.tenant(),
            roles=data["roles"],
            key_grant=data.get("key_grant"),
            email=data.get("email", ""),
            **link_origin(request),
        )
        body = InvitationOut(invitation).data
        body["link"] = link
        return Response(body, status=status.HTTP_201_CREATED)


class InvitationDetailView(_InvitationViewMixin, KcmAPIView):
    allowed_roles = ALL_TENANT_ROLES
    audit_actions = {"DELETE": "invitation.revoke"}

    @extend_schema(responses={204: None})
    def delete(self, request: Request, invitation_id: int, **kwargs: Any) -> Response:
        invitations.invitation_revoke(
            tenant=self.tenant(), invitation_id=invitation_id, actor=principal_of(request)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class PlatformInvitationListView(InvitationListView):
    """A platform operator invites a tenant's first administrators (while it has none)."""

    allowed_roles = PLATFORM


class PlatformInvitationDetailView(InvitationDetailView):
    allowed_roles = PLATFORM
