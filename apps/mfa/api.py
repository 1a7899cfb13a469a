"""MFA API: the tenant's MFA setting (GET for admins and auditors, PUT for tenant admins).
Factors are enrolled in the console only (they belong to a person, not to a token)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import KcmAPIView, StrictSerializer, parse, principal_of
from apps.core.roles import Role
from apps.mfa import services
from apps.mfa.signin import step_up_api_check

READERS = frozenset({Role.KEY_ADMIN, Role.TENANT_ADMIN, Role.AUDITOR})
TENANT_ADMIN = frozenset({Role.TENANT_ADMIN})


class MfaPolicyIn(StrictSerializer):
    require_for_admins = serializers.BooleanField()


class MfaPolicyView(KcmAPIView):
    """Whether key admins and tenant admins must sign in with a second factor. Lifting the
    requirement needs a fresh factor of the caller (as approving does: X-KCM-MFA-Code)."""

    method_roles = {"GET": READERS, "PUT": TENANT_ADMIN}
    allowed_roles = READERS | TENANT_ADMIN
    audit_actions = {"PUT": "mfa.policy_set"}

    @extend_schema(responses=OpenApiResponse(description="The MFA setting"))
    def get(self, request: Request) -> Response:
        tenant_id = principal_of(request).tenant_id
        return Response({"require_for_admins": services.policy_requires(tenant_id)})

    @extend_schema(request=MfaPolicyIn, responses=OpenApiResponse(description="The MFA setting"))
    def put(self, request: Request) -> Response:
        data = parse(MfaPolicyIn, request)
        principal = principal_of(request)
        if not data["require_for_admins"]:
            step_up_api_check(request, principal)  # lifting the requirement: X-KCM-MFA-Code
        policy = services.policy_set(
            tenant_id=principal.tenant_id,
            require_for_admins=data["require_for_admins"],
        )
        return Response({"require_for_admins": policy.require_for_admins})
