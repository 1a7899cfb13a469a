"""`/api/v1/sso/`: the tenant's OpenID Connect provider (tenant admins). The client secret is
write-only: answers say only whether one is stored."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import KcmAPIView, StrictSerializer, parse
from apps.core.roles import Role
from apps.sso import services
from apps.sso.errors import SsoNotConfigured
from apps.sso.models import OidcProvider
from apps.sso.selectors import provider_get
from apps.tenants.access import current_tenant

ADMIN = frozenset({Role.TENANT_ADMIN})


class ProviderOut(serializers.ModelSerializer):
    client_secret_set = serializers.SerializerMethodField()
    role_map = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))
    allowed_domains = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = OidcProvider
        fields = [
            "name",
            "issuer",
            "client_id",
            "client_secret_set",
            "role_claim",
            "role_map",
            "allowed_domains",
            "local_passwords",
            "updated_at",
        ]

    def get_client_secret_set(self, provider: OidcProvider) -> bool:
        return bool(provider.client_secret)


class ProviderIn(StrictSerializer):
    name = serializers.CharField(max_length=60)
    issuer = serializers.CharField(max_length=500)
    client_id = serializers.CharField(max_length=255)
    client_secret = serializers.CharField(
        max_length=500,
        required=False,
        write_only=True,
        help_text="Write-only; omit to keep the stored secret (same issuer only).",
    )
    role_claim = serializers.CharField(max_length=100, default="groups")
    role_map = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField(max_length=32), max_length=5),
        help_text='Claim values to KCM roles, e.g. {"kcm-admins": ["tenant_admin"]}.',
    )
    allowed_domains = serializers.ListField(
        child=serializers.CharField(max_length=253), min_length=1, max_length=50
    )
    local_passwords = serializers.BooleanField(default=True)


class PasswordsIn(StrictSerializer):
    local_passwords = serializers.BooleanField()


class ProviderView(KcmAPIView):
    allowed_roles = ADMIN
    audit_actions = {"PUT": "sso.update", "PATCH": "sso.update", "DELETE": "sso.remove"}
    # 404 sso_not_configured; 503 hsm_unavailable when the secret cannot be sealed.
    schema_refusals = {"GET": ("404",), "PUT": ("503",)}

    @extend_schema(responses=ProviderOut)
    def get(self, request: Request) -> Response:
        provider = provider_get(tenant=current_tenant())
        if provider is None:
            raise SsoNotConfigured()
        return Response(ProviderOut(provider).data)

    @extend_schema(request=ProviderIn, responses=ProviderOut)
    def put(self, request: Request) -> Response:
        data: dict[str, Any] = parse(ProviderIn, request)
        provider = services.provider_set(
            tenant=current_tenant(), **{**data, "client_secret": data.get("client_secret")}
        )
        return Response(ProviderOut(provider).data)

    @extend_schema(request=PasswordsIn, responses=ProviderOut)
    def patch(self, request: Request) -> Response:
        data = parse(PasswordsIn, request)
        provider = services.local_passwords_set(
            tenant=current_tenant(), enabled=data["local_passwords"]
        )
        return Response(ProviderOut(provider).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request) -> Response:
        services.provider_delete(tenant=current_tenant())
        return Response(status=status.HTTP_204_NO_CONTENT)
