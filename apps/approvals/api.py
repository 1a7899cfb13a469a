"""Approvals API: the requests (list, get, approve, deny, withdraw, execute) and the policy; a
tenant's under /api/v1/approvals/, the platform's (operators) under
/api/v1/platform/approvals/, with the same shapes."""

from __future__ import annotations

from uuid import UUID

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.approvals import policy, selectors, services
from apps.approvals.actions import ACTIONS
from apps.approvals.ledgers import PLATFORM, TENANT, Ledger
from apps.approvals.models import RequestState
from apps.approvals.platform.actions import platform_policy
from apps.core.api import EmptyIn, KcmAPIView, StrictSerializer, parse, principal_of
from apps.core.roles import Role
from apps.mfa.signin import step_up_api

READERS = frozenset({Role.KEY_ADMIN, Role.TENANT_ADMIN, Role.AUDITOR})
DECIDERS = frozenset({Role.KEY_ADMIN, Role.TENANT_ADMIN})
TENANT_ADMIN = frozenset({Role.TENANT_ADMIN})
OPERATORS = frozenset({Role.PLATFORM_OPERATOR})
DECISIONS = ("approve", "deny", "withdraw", "execute")


class DenyIn(StrictSerializer):
    reason = serializers.CharField(max_length=500)


class PolicyIn(StrictSerializer):
    actions = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(ACTIONS)), max_length=len(ACTIONS)
    )
    required = serializers.IntegerField(  # type: ignore[assignment]
        required=False, default=2, min_value=1, max_value=policy.MAX_REQUIRED
    )
    approver_role = serializers.ChoiceField(
        choices=list(policy.APPROVER_ROLES), required=False, default=Role.KEY_ADMIN
    )
    expiry_days = serializers.IntegerField(
        required=False, default=7, min_value=1, max_value=policy.MAX_EXPIRY_DAYS
    )


class ApprovalListView(KcmAPIView):
    """Approval requests, newest first (`?state=PENDING` for those waiting)."""

    allowed_roles = READERS
    ledger: Ledger = TENANT

    @extend_schema(
        parameters=[OpenApiParameter("state", str, enum=RequestState.values, required=False)],
        responses=OpenApiResponse(description="Approval requests"),
    )
    def get(self, request: Request) -> Response:
        services.expire_due(ledger=self.ledger)
        requests = selectors.request_list(
            state=request.query_params.get("state"), ledger=self.ledger
        )
        return Response({"results": [selectors.request_body(r) for r in requests]})


class ApprovalDetailView(KcmAPIView):
    """One approval request: the action and parameters it would run, approvals, outcome."""

    allowed_roles = READERS
    ledger: Ledger = TENANT

    @extend_schema(responses=OpenApiResponse(description="The approval request"))
    def get(self, request: Request, request_id: UUID) -> Response:
        row = selectors.request_get(request_id=request_id, ledger=self.ledger)
        return Response(selectors.request_body(row))


class ApprovalActionView(KcmAPIView):
    """POST /approvals/<id>/approve/, /deny/ (with a reason), /withdraw/ (the requester) or
    /execute/ (the requester, to run again a request whose run was refused: FAILED). The
    approval that reaches the required count runs the action, as the requester."""

    allowed_roles = DECIDERS
    ledger: Ledger = TENANT
    action: str = ""

    @property
    def audit_action(self) -> str:  # type: ignore[override]
        return f"approval.{self.action}"

    def audit_target(self, request: Request, response: Response) -> tuple[str, int | None]:
        return str(self.kwargs["request_id"]), None

    def schema_request(self) -> type[StrictSerializer]:
        return DenyIn if self.action == "deny" else EmptyIn

    @extend_schema(responses=OpenApiResponse(description="The approval request"))
    def post(self, request: Request, request_id: UUID) -> Response:
        principal = principal_of(request)
        step_up_api(request, principal, self.action)  # X-KCM-MFA-Code (apps.mfa)
        if self.action == "deny":
            data = parse(DenyIn, request)
            row = services.request_deny(
                request_id=request_id,
                principal=principal,
                reason=data["reason"],
                ledger=self.ledger,
            )
        else:
            parse(EmptyIn, request)
            act = {
                "approve": services.request_approve,
                "withdraw": services.request_withdraw,
                "execute": services.request_execute,
            }
            row = act[self.action](request_id=request_id, principal=principal, ledger=self.ledger)
        return Response(selectors.request_body(row))


class ApprovalPolicyView(KcmAPIView):
    """The tenant's approval policy. PUT sets it (tenant admins); when the policy itself
    covers `approval.policy.set`, the change becomes an approval request (202)."""

    method_roles = {"GET": READERS, "PUT": TENANT_ADMIN}
    allowed_roles = READERS | TENANT_ADMIN
    audit_actions = {"PUT": "approval.policy.set"}

    @extend_schema(responses=OpenApiResponse(description="The policy"))
    def get(self, request: Request) -> Response:
        return Response(policy.policy_body(policy.policy_get()))

    @extend_schema(
        request=PolicyIn,
        responses={
            200: OpenApiResponse(description="The policy, set"),
            202: OpenApiResponse(description="The approval request the change became"),
        },
    )
    def put(self, request: Request) -> Response:
        data = parse(PolicyIn, request)
        outcome = services.policy_set(
            principal=principal_of(request),
            actions=list(data["actions"]),
            required=data["required"],
            approver_role=data["approver_role"],
            expiry_days=data["expiry_days"],
        )
        if isinstance(outcome, dict):
            return Response(outcome, status=status.HTTP_202_ACCEPTED)
        return Response(policy.policy_body(outcome))


# --- the platform's (public schema, platform operators) -----------------------------------


class PlatformApprovalListView(ApprovalListView):
    """The platform's approval requests (terminate a tenant), newest first."""

    allowed_roles = OPERATORS
    ledger = PLATFORM


class PlatformApprovalDetailView(ApprovalDetailView):
    allowed_roles = OPERATORS
    ledger = PLATFORM


class PlatformApprovalActionView(ApprovalActionView):
    """approve, deny, withdraw or execute a platform request: by other platform operators."""

    allowed_roles = OPERATORS
    ledger = PLATFORM


class PlatformApprovalPolicyView(KcmAPIView):
    """The platform policy: read-only here, it is the deployment's settings
    (KCM_PLATFORM_APPROVALS_REQUIRED, KCM_PLATFORM_APPROVAL_EXPIRY_DAYS)."""

    allowed_roles = OPERATORS

    @extend_schema(responses=OpenApiResponse(description="The platform policy"))
    def get(self, request: Request) -> Response:
        return Response(platform_policy())
