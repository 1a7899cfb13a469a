"""Tenant and platform API. Views parse, call one service or selector, and render."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import KcmAPIView, StrictSerializer, parse, principal_of
from apps.core.approvals import approval_gate
from apps.core.errors import NotFound
from apps.core.pagination import CursorPagination
from apps.core.roles import TENANT_ROLES, Role
from apps.tenants import selectors, services
from apps.tenants.access import current_tenant
from apps.tenants.grants import MAX_SERVICE_KEYS, KeyGrant, grant_of
from apps.tenants.models import ApiToken, Membership, Tenant
from apps.tenants.tokens import api_token_create, api_token_revoke

ALL_TENANT_ROLES = frozenset(TENANT_ROLES)
TENANT_ROLE_VALUES = [role.value for role in TENANT_ROLES]
ADMIN = frozenset({Role.TENANT_ADMIN})
PLATFORM = frozenset({Role.PLATFORM_OPERATOR})


class PaginatedListMixin:
    pagination_class = CursorPagination  # documents the page's shape and parameters

    def paginate(self, request: Request, queryset: Any, serializer: Any) -> Response:
        paginator = self.pagination_class()
        page: Any = paginator.paginate_queryset(queryset, request, view=self)  # type: ignore[arg-type]
        return paginator.get_paginated_response(serializer(page, many=True).data)


# --- me -------------------------------------------------------------------------------


_GRANT_SCHEMA = {
    "type": "object",
    "nullable": True,
    "description": 'A key user\'s grant: `service_keys` (names, or ["*"] for all) and '
    "`context`: encryption-context keys every request must carry, each with the exact value "
    "or null for any value.",
    "properties": {
        "service_keys": {
            "type": "array",
            "items": {"type": "string", "maxLength": 64},
            "minItems": 1,
            "maxItems": MAX_SERVICE_KEYS,
        },
        "context": {
            "type": "object",
            "additionalProperties": {"type": "string", "nullable": True},
        },
    },
    "required": ["service_keys"],
    "additionalProperties": False,
}


@extend_schema_field(_GRANT_SCHEMA)
class KeyGrantField(serializers.JSONField):
    """A key grant, parsed and validated by apps.tenants.grants (400 `invalid_grant`)."""

    def to_internal_value(self, data: Any) -> KeyGrant | None:  # type: ignore[override]
        return None if data is None else KeyGrant.parse(super().to_internal_value(data))


class MeSerializer(serializers.Serializer):
    kind = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]
    role = serializers.CharField(help_text="The roles, sorted and joined with commas.")
    roles = serializers.ListField(child=serializers.CharField())
    key_grant = KeyGrantField(allow_null=True)
    tenant = serializers.CharField()


class MeView(KcmAPIView):
    """Who am I? Any authenticated principal of this tenant."""

    allowed_roles = ALL_TENANT_ROLES | PLATFORM

    @extend_schema(responses=MeSerializer)
    def get(self, request: Request) -> Response:
        principal = principal_of(request)
        return Response(
            {
                "kind": principal.kind,
                "label": principal.label,
                "role": principal.role,
                "roles": sorted(principal.roles),
                "key_grant": grant.to_json() if (grant := grant_of(principal)) else None,
                "tenant": current_tenant().slug,
            }
        )


# --- members --------------------------------------------------------------------------


class MembershipOut(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")
    email = serializers.CharField(source="user.email")
    # The same choice set as MembershipPatch's: one enum in the schema (members listed here
    # are a tenant's, never the platform's operators).
    roles = serializers.ListField(child=serializers.ChoiceField(choices=TENANT_ROLE_VALUES))
    key_grant = KeyGrantField(allow_null=True, read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "username", "email", "roles", "key_grant", "created_at"]


class MembershipPatch(StrictSerializer):
    roles = serializers.ListField(
        child=serializers.ChoiceField(choices=TENANT_ROLE_VALUES),
        min_length=1,
        max_length=len(TENANT_ROLES),
        required=False,
    )
    key_grant = KeyGrantField(required=False, allow_null=True)


class MemberListView(PaginatedListMixin, KcmAPIView):
    """This tenant's members. People join by invitation only (apps.tenants.invitations):
    nobody is attached by username."""

    allowed_roles = ADMIN

    @extend_schema(responses=MembershipOut(many=True))
    def get(self, request: Request) -> Response:
        return self.paginate(
            request, selectors.membership_list(tenant=current_tenant()), MembershipOut
        )


class MemberDetailView(KcmAPIView):
    allowed_roles = ADMIN
    audit_actions = {"PATCH": "member.role_change", "DELETE": "member.remove"}

    def _get(self, membership_id: int) -> Membership:
        membership = (
            selectors.membership_list(tenant=current_tenant()).filter(pk=membership_id).first()
        )
        if membership is None:
            raise NotFound("No such member.", code="member_not_found")
        return membership

    @extend_schema(responses=MembershipOut)
    def get(self, request: Request, membership_id: int) -> Response:
        return Response(MembershipOut(self._get(membership_id)).data)

    @extend_schema(
        request=MembershipPatch,
        responses={
            200: MembershipOut,
            202: OpenApiResponse(description="The approval request the change became"),
        },
    )
    def patch(self, request: Request, membership_id: int) -> Response:
        data = parse(MembershipPatch, request)
        principal = principal_of(request)
        # Granting key_admin or tenant_admin may need approval (the tenant's policy): 202.
        pending = approval_gate(
            principal=principal,
            action="member.role_change",
            target=str(membership_id),
            params=services.member_change_params(
                roles=data.get("roles"), key_grant=data.get("key_grant", services.UNCHANGED)
            ),
        )
        if pending is not None:
            return Response(pending, status=status.HTTP_202_ACCEPTED)
        membership = services.member_update(
            tenant=current_tenant(), membership_id=membership_id, actor=principal, **data
        )
        return Response(MembershipOut(membership).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, membership_id: int) -> Response:
        services.membership_remove(
            tenant=current_tenant(), membership_id=membership_id, acting=principal_of(request)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- API tokens -----------------------------------------------------------------------


class ApiTokenOut(serializers.ModelSerializer):
    key_grant = KeyGrantField(allow_null=True, read_only=True)

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "role",
            "key_grant",
            "prefix",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
        ]


class ApiTokenCreated(ApiTokenOut):
    token = serializers.CharField(help_text="The bearer token. Shown once; store it now.")

    class Meta(ApiTokenOut.Meta):
        fields = [*ApiTokenOut.Meta.fields, "token"]


class ApiTokenIn(StrictSerializer):
    name = serializers.CharField(max_length=100)
    role = serializers.ChoiceField(choices=[r.value for r in Role])
    key_grant = KeyGrantField(
        required=False,
        allow_null=True,
        help_text="Only for a key_user token: within your own grant; by default, your grant.",
    )
    expires_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="By default, and at most, KCM_TOKEN_MAX_LIFETIME_DAYS from now.",
    )


class TokenListView(PaginatedListMixin, KcmAPIView):
    allowed_roles = ADMIN | PLATFORM
    audit_actions = {"POST": "token.create"}

    @extend_schema(responses=ApiTokenOut(many=True))
    def get(self, request: Request) -> Response:
        return self.paginate(
            request, selectors.api_token_list(tenant=current_tenant()), ApiTokenOut
        )

    @extend_schema(request=ApiTokenIn, responses={201: ApiTokenCreated})
    def post(self, request: Request) -> Response:
        data = parse(ApiTokenIn, request)
        principal = principal_of(request)
        token, plaintext = api_token_create(
            tenant=current_tenant(),
            name=data["name"],
            role=data["role"],
            key_grant=data.get("key_grant"),
            expires_at=data.get("expires_at"),
            created_by_id=principal.user_id,
            actor=principal,
        )
        body = ApiTokenOut(token).data
        body["token"] = plaintext
        return Response(body, status=status.HTTP_201_CREATED)


class TokenDetailView(KcmAPIView):
    allowed_roles = ADMIN | PLATFORM
    audit_actions = {"DELETE": "token.revoke"}

    @extend_schema(responses={204: None})
    def delete(self, request: Request, token_id: int) -> Response:
        api_token_revoke(tenant=current_tenant(), token_id=token_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- platform: tenants ----------------------------------------------------------------


class TenantOut(serializers.ModelSerializer):
    domain = serializers.SerializerMethodField()

    class Meta:
        model = Tenant
        fields = ["slug", "name", "status", "status_reason", "domain", "created_at"]

    def get_domain(self, tenant: Tenant) -> str | None:
        return selectors.tenant_primary_domain(tenant=tenant)


class TenantIn(StrictSerializer):
    slug = serializers.CharField(max_length=100)  # the rule itself lives in tenant_create
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)


class TenantActionIn(StrictSerializer):
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True)


class TenantListView(PaginatedListMixin, KcmAPIView):
    allowed_roles = PLATFORM
    audit_actions = {"POST": "tenant.create"}

    @extend_schema(responses=TenantOut(many=True))
    def get(self, request: Request) -> Response:
        status_filter = request.query_params.get("status")
        return self.paginate(request, selectors.tenant_list(status=status_filter), TenantOut)

    @extend_schema(request=TenantIn, responses={201: TenantOut})
    def post(self, request: Request) -> Response:
        data = parse(TenantIn, request)
        tenant = services.tenant_create(slug=data["slug"], name=data.get("name", ""))
        return Response(TenantOut(tenant).data, status=status.HTTP_201_CREATED)


class TenantDetailView(KcmAPIView):
    allowed_roles = PLATFORM

    @extend_schema(responses=TenantOut)
    def get(self, request: Request, slug: str) -> Response:
        return Response(TenantOut(services.tenant_get(slug=slug)).data)


class TenantActionView(KcmAPIView):
    """POST /platform/tenants/<slug>/<action>/ with action suspend, resume or terminate."""

    allowed_roles = PLATFORM
    action: str = ""

    @property
    def audit_action(self) -> str:  # type: ignore[override]
        return f"tenant.{self.action}"

    @extend_schema(
        request=TenantActionIn,
        responses={
            200: TenantOut,
            202: OpenApiResponse(description="The approval request a termination became"),
        },
    )
    def post(self, request: Request, slug: str) -> Response:
        data = parse(TenantActionIn, request)
        tenant = services.tenant_get(slug=slug)
        reason = data.get("reason", "")
        if self.action == "terminate":
            # KCM_PLATFORM_APPROVALS_REQUIRED may make it wait for other operators: 202.
            pending = approval_gate(
                principal=principal_of(request),
                action="tenant.terminate",
                target=tenant.slug,
                params={"reason": reason},
            )
            if pending is not None:
                return Response(pending, status=status.HTTP_202_ACCEPTED)
        if self.action == "suspend":
            services.tenant_suspend(tenant=tenant, reason=reason)
        elif self.action == "resume":
            services.tenant_resume(tenant=tenant)
        else:
            services.tenant_terminate(tenant=tenant, reason=reason)
        return Response(TenantOut(tenant).data)
