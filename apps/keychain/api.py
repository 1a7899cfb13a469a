"""Key-chain API: lifecycle for key admins, cryptographic operations for key users."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import EmptyIn, KcmAPIView, StrictSerializer, parse, principal_of
from apps.core.approvals import approval_gate
from apps.core.errors import KcmError, ValidationFailed
from apps.core.roles import Role
from apps.keychain import datakeys, selectors, services, version_deletion
from apps.keychain.errors import KeyNotFound
from apps.keychain.models import CustomerKeyVersion, ServiceKey
from apps.keychain.services import AnyKey

KEY_ADMIN = frozenset({Role.KEY_ADMIN})
KEY_READERS = frozenset({Role.KEY_ADMIN, Role.TENANT_ADMIN, Role.AUDITOR})
KEY_USER = frozenset({Role.KEY_USER})


class CustomerKeyIn(StrictSerializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)


class ServiceKeyIn(StrictSerializer):
    name = serializers.SlugField(max_length=64)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    customer_key_id = serializers.UUIDField(required=False)


@extend_schema_field(
    {
        "type": "integer",
        "minimum": settings.KCM_DELETION_MIN_DAYS,
        "maximum": settings.KCM_DELETION_MAX_DAYS,
    }
)
class PendingDaysField(serializers.IntegerField):
    """A deletion's waiting period in days. The service checks the range (code
    `invalid_pending_days`); the schema states it."""


class ScheduleDeletionIn(StrictSerializer):
    pending_days = PendingDaysField()


class ChainView(KcmAPIView):
    """The whole chain as a tree: L1 → L2 → L3, with versions and states."""

    allowed_roles = KEY_READERS

    @extend_schema(responses=OpenApiResponse(description="List of L1 trees"))
    def get(self, request: Request) -> Response:
        return Response({"results": selectors.chain_tree()})


class CustomerKeyCreateView(KcmAPIView):
    allowed_roles = KEY_ADMIN
    audit_action = "key.create"

    @extend_schema(request=CustomerKeyIn, responses={201: OpenApiResponse(description="The L1")})
    def post(self, request: Request) -> Response:
        data = parse(CustomerKeyIn, request)
        l1 = services.customer_key_create(
            name=data["name"], description=data.get("description", "")
        )
        tree = next(node for node in selectors.chain_tree() if node["id"] == str(l1.pk))
        return Response(tree, status=status.HTTP_201_CREATED)


class ServiceKeyListView(KcmAPIView):
    audit_actions = {"POST": "key.create"}
    method_roles = {"GET": KEY_READERS | KEY_USER, "POST": KEY_ADMIN}
    allowed_roles = KEY_READERS | KEY_USER | KEY_ADMIN

    @extend_schema(responses=OpenApiResponse(description="Service keys"))
    def get(self, request: Request) -> Response:
        keys = ServiceKey.objects.order_by("name")
        return Response({"results": [selectors.service_key_detail(k) for k in keys]})

    @extend_schema(request=ServiceKeyIn, responses={201: OpenApiResponse(description="The L3")})
    def post(self, request: Request) -> Response:
        data = parse(ServiceKeyIn, request)
        l3 = services.service_key_create(
            name=data["name"],
            description=data.get("description", ""),
            customer_key_id=data.get("customer_key_id"),
        )
        return Response(selectors.service_key_detail(l3), status=status.HTTP_201_CREATED)


class ServiceKeyDetailView(KcmAPIView):
    allowed_roles = KEY_READERS | KEY_USER

    @extend_schema(responses=OpenApiResponse(description="The L3 with its versions"))
    def get(self, request: Request, name: str) -> Response:
        l3 = ServiceKey.objects.filter(name=name).first()
        if l3 is None:
            raise KeyNotFound(f"No service key {name!r}.")
        return Response(selectors.service_key_detail(l3))


def key_body(key: AnyKey) -> dict[str, Any]:
    """A key as a lifecycle action answers it (the rotate action in apps/rotation too)."""
    return {
        "id": str(key.pk),
        "level": key.level,
        "state": key.state,
        "primary_version": key.primary_version,
        "deletion_date": key.deletion_date,
    }


class KeyActionView(KcmAPIView):
    """POST /keys/<id>/<action>/: enable, disable, schedule-deletion, cancel-deletion (rotate
    is apps/rotation's: it queues the rewrap)."""

    allowed_roles = KEY_ADMIN
    action: str = ""

    @property
    def audit_action(self) -> str:  # type: ignore[override]
        return "key." + self.action.replace("-", "_")

    def schema_request(self) -> type[StrictSerializer]:
        return ScheduleDeletionIn if self.action == "schedule-deletion" else EmptyIn

    @extend_schema(
        responses={
            200: OpenApiResponse(description="The key"),
            202: OpenApiResponse(description="The approval request the action became"),
        }
    )
    def post(self, request: Request, key_id: UUID) -> Response:
        params = parse(
            ScheduleDeletionIn if self.action == "schedule-deletion" else EmptyIn, request
        )
        # The tenant's approval policy may gate this: then it waits for approvers (202).
        pending = approval_gate(
            principal=principal_of(request),
            action=self.audit_action,
            target=str(key_id),
            params=params,
        )
        if pending is not None:
            return Response(pending, status=status.HTTP_202_ACCEPTED)
        if self.action == "schedule-deletion":
            key = services.key_schedule_deletion(key_id=key_id, pending_days=params["pending_days"])
        else:
            key = services.LIFECYCLE_ACTIONS[self.action](key_id=key_id)
        return Response(key_body(key))


def version_body(key_id: UUID | str, version: CustomerKeyVersion) -> dict[str, Any]:
    return {
        "key_id": str(key_id),
        "version": version.version,
        "state": version.state,
        "deletion_date": version.deletion_date,
    }


class KeyVersionActionView(KcmAPIView):
    """POST /keys/<id>/versions/<n>/schedule-deletion/ and …/cancel-deletion/: the scheduled
    deletion of one retired L1 version (apps.keychain.version_deletion)."""

    allowed_roles = KEY_ADMIN
    action: str = ""

    @property
    def audit_action(self) -> str:  # type: ignore[override]
        return "key.version." + self.action.replace("-", "_")

    def audit_target(self, request: Request, response: Response) -> tuple[str, int | None]:
        return str(self.kwargs["key_id"]), self.kwargs["version"]

    def schema_request(self) -> type[StrictSerializer]:
        return ScheduleDeletionIn if self.action == "schedule-deletion" else EmptyIn

    @extend_schema(responses=OpenApiResponse(description="Version"))
    def post(self, request: Request, key_id: UUID, version: int) -> Response:
        if self.action == "schedule-deletion":
            data = parse(ScheduleDeletionIn, request)
            row = version_deletion.l1_version_schedule_deletion(
                key_id=key_id, version=version, pending_days=data["pending_days"]
            )
        else:
            parse(EmptyIn, request)
            row = version_deletion.l1_version_cancel_deletion(key_id=key_id, version=version)
        return Response(version_body(key_id, row))


# --- cryptographic operations -----------------------------------------------------------


class ContextField(serializers.JSONField):
    """An object of string keys and string values; checked strictly (no coercion) by the
    crypto layer, which canonicalises it into the associated data."""


class GenerateIn(StrictSerializer):
    context = ContextField(required=False)  # type: ignore[assignment]
    include_plaintext = serializers.BooleanField(required=False, default=True)


class CiphertextIn(StrictSerializer):
    ciphertext = serializers.CharField(max_length=16384)
    context = ContextField(required=False)  # type: ignore[assignment]


class PlaintextIn(StrictSerializer):
    plaintext = serializers.CharField(max_length=8192, help_text="base64, at most 4 KiB decoded")
    context = ContextField(required=False)  # type: ignore[assignment]


class BatchIn(StrictSerializer):
    items = serializers.ListField(
        child=serializers.JSONField(), min_length=1, max_length=datakeys.MAX_BATCH
    )


_INPUTS: dict[str, type[StrictSerializer]] = {
    "generate-data-key": GenerateIn,
    "decrypt-data-key": CiphertextIn,
    "encrypt": PlaintextIn,
    "decrypt": CiphertextIn,
    "rewrap": CiphertextIn,
}


AUDIT_ACTIONS = datakeys.AUDIT_ACTIONS


class CryptoAuditMixin(KcmAPIView):
    """Every cryptographic operation is audited here, success or not, before the response
    leaves: the key, the version used and the encryption context (never key material)."""

    operation: str = ""
    audit_success_here = True

    def audit_target(self, request: Request, response: Response) -> tuple[str, int | None]:
        data = response.data if isinstance(response.data, dict) else {}
        version = data.get("key_version")
        return f"service_key:{self.kwargs.get('name', '')}", version if isinstance(
            version, int
        ) else None

    def audit_details(self, request: Request, response: Response) -> dict[str, Any]:
        try:
            body = request.data if isinstance(request.data, dict) else {}
        except APIException:  # refused before its body was parsed, and it does not parse
            return {}
        context = body.get("context")
        return {"context": context} if isinstance(context, dict) else {}


class CryptoView(CryptoAuditMixin):
    """POST /service-keys/<name>/<operation>/ for one item."""

    allowed_roles = KEY_USER

    @property
    def audit_action(self) -> str:  # type: ignore[override]
        return AUDIT_ACTIONS[self.operation]

    def schema_request(self) -> type[StrictSerializer]:
        return _INPUTS[self.operation]

    @extend_schema(responses=OpenApiResponse(description="Result"))
    def post(self, request: Request, name: str) -> Response:
        return Response(self.answer(request, name))

    def answer(self, request: Request, name: str) -> dict[str, Any]:
        """The 200 answer's data (the data plane serves it without a Response object)."""
        item: dict[str, Any] = parse(_INPUTS[self.operation], request)
        return datakeys.run(
            service_key=name, operation=self.operation, item=item, principal=principal_of(request)
        )


class CryptoBatchView(CryptoAuditMixin):
    """POST /service-keys/<name>/<operation>/batch/ with up to 1,000 items, a result each."""

    allowed_roles = KEY_USER

    @property
    def audit_action(self) -> str:  # type: ignore[override]
        return AUDIT_ACTIONS[self.operation] + datakeys.BATCH_SUFFIX

    def audit_details(self, request: Request, response: Response) -> dict[str, Any]:
        data = response.data if isinstance(response.data, dict) else {}
        results = data.get("results") or []
        failed = sum(1 for result in results if not result.get("ok"))
        return {"items": len(results), "failed": failed}

    @extend_schema(request=BatchIn, responses=OpenApiResponse(description="A result per item"))
    def post(self, request: Request, name: str) -> Response:
        return Response(self.answer(request, name))

    def answer(self, request: Request, name: str) -> dict[str, Any]:
        """The 200 answer's data (the data plane serves it without a Response object)."""
        data = parse(BatchIn, request)
        item_serializer = _INPUTS[self.operation]
        items: list[dict[str, Any] | KcmError] = []
        for raw in data["items"]:
            parsed = item_serializer(data=raw)
            if parsed.is_valid():
                items.append(dict(parsed.validated_data))
            else:
                items.append(ValidationFailed(_flatten(parsed.errors)))
        results = datakeys.run_batch(
            service_key=name, operation=self.operation, items=items, principal=principal_of(request)
        )
        return {"results": results}


def _flatten(errors: Any) -> str:
    if isinstance(errors, dict):
        return "; ".join(f"{field}: {_flatten(value)}" for field, value in errors.items())
    if isinstance(errors, list):
        return " ".join(_flatten(value) for value in errors)
    return str(errors)


class KeyMaterialView(KcmAPIView):
    """GET /keys/<id>/material/: where each version's material is (KCVs, expiry, references)."""

    allowed_roles = KEY_READERS

    @extend_schema(responses=OpenApiResponse(description="The L1 and its versions' material"))
    def get(self, request: Request, key_id: UUID) -> Response:
        return Response(selectors.customer_key_material_of(key_id))
