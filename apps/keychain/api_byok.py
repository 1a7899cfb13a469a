"""API of BYOK customer keys: import parameters, import, and deletion of imported material."""

from __future__ import annotations

from uuid import UUID

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import EmptyIn, KcmAPIView, StrictSerializer, parse, principal_of
from apps.core.approvals import approval_gate
from apps.keychain import byok, selectors
from apps.keychain.api import KEY_ADMIN
from apps.keychain.datakeys import b64decode
from apps.keystores.base import WRAPPING_KEY_BITS

_MAX_WRAPPED_B64 = 2048


class ByokKeyIn(StrictSerializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)


class ImportParametersIn(StrictSerializer):
    algorithm = serializers.CharField(max_length=40)
    wrapping_key_bits = serializers.IntegerField(required=False, default=max(WRAPPING_KEY_BITS))


class ImportIn(StrictSerializer):
    import_token = serializers.CharField(max_length=200)
    wrapped_material = serializers.CharField(
        max_length=_MAX_WRAPPED_B64, help_text="base64 of the wrapped key material"
    )
    material_expires_at = serializers.DateTimeField(required=False, allow_null=True)
    new_version = serializers.BooleanField(required=False, default=False)


class ByokKeyCreateView(KcmAPIView):
    """POST /customer-keys/byok/: an L1 in PENDING_IMPORT, waiting for the customer's key."""

    allowed_roles = KEY_ADMIN
    audit_action = "key.create"

    @extend_schema(request=ByokKeyIn, responses={201: OpenApiResponse(description="The L1")})
    def post(self, request: Request) -> Response:
        data = parse(ByokKeyIn, request)
        l1 = byok.customer_key_create_byok(
            name=data["name"], description=data.get("description", "")
        )
        return Response(selectors.customer_key_material_of(l1.pk), status=status.HTTP_201_CREATED)


class ImportParametersView(KcmAPIView):
    """POST /keys/<id>/import-parameters/: a wrapping public key and an import token."""

    allowed_roles = KEY_ADMIN
    audit_action = "key.import_parameters"

    @extend_schema(
        request=ImportParametersIn, responses={201: OpenApiResponse(description="Parameters")}
    )
    def post(self, request: Request, key_id: UUID) -> Response:
        data = parse(ImportParametersIn, request)
        token = byok.import_parameters_create(
            key_id=key_id, algorithm=data["algorithm"], wrapping_key_bits=data["wrapping_key_bits"]
        )
        body = {
            **selectors.import_parameters(token),
            "supported_algorithms": byok.supported_algorithms(),
        }
        return Response(body, status=status.HTTP_201_CREATED)


class ImportView(KcmAPIView):
    """POST /keys/<id>/import/: wrapped material in, key check value out."""

    allowed_roles = KEY_ADMIN
    audit_action = "key.import"

    @extend_schema(request=ImportIn, responses=OpenApiResponse(description="The import"))
    def post(self, request: Request, key_id: UUID) -> Response:
        data = parse(ImportIn, request)
        version = byok.material_import(
            key_id=key_id,
            import_token=data["import_token"],
            wrapped=b64decode(data["wrapped_material"], "wrapped_material"),
            material_expires_at=data.get("material_expires_at"),
            new_version=data["new_version"],
        )
        return Response(
            {
                "key_id": str(key_id),
                "version": version.version,
                "key_check_value": version.key_check_value,
                "key_check_value_cmac": version.key_check_value_cmac,
                "material_expires_at": version.material_expires_at,
                "key": selectors.customer_key_material_of(key_id),
            }
        )


class DeleteImportedMaterialView(KcmAPIView):
    """POST /keys/<id>/delete-imported-material/: the key waits for the same material again."""

    allowed_roles = KEY_ADMIN
    audit_action = "key.import_delete"

    @extend_schema(
        request=EmptyIn,
        responses={
            200: OpenApiResponse(description="The L1"),
            202: OpenApiResponse(description="The approval request the deletion became"),
        },
    )
    def post(self, request: Request, key_id: UUID) -> Response:
        parse(EmptyIn, request)
        pending = approval_gate(
            principal=principal_of(request), action=self.audit_action, target=str(key_id), params={}
        )
        if pending is not None:
            return Response(pending, status=status.HTTP_202_ACCEPTED)
        byok.material_delete(key_id=key_id)
        return Response(selectors.customer_key_material_of(key_id))
