"""API of customer-controlled L1s: BYOK (import) and HYOK (external key managers)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import KcmAPIView, StrictSerializer, parse
from apps.keychain import byok, hyok, selectors_external
from apps.keychain.api import KEY_ADMIN, KEY_READERS
from apps.keychain.datakeys import b64decode
from apps.keychain.errors import KeyManagerNotFound, KeyNotFound
from apps.keychain.models import CustomerKey, ExternalKeyManager
from apps.keystores.base import WRAPPING_KEY_BITS

# An RSA-4096 blob plus an AES key wrap of 32 bytes is 552 bytes; base64 of that, with room.
_MAX_WRAPPED_B64 = 2048


class ByokKeyIn(StrictSerializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)


class HyokKeyIn(StrictSerializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    key_manager_id = serializers.UUIDField()
    external_key_id = serializers.CharField(max_length=150)


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


class LinkIn(StrictSerializer):
    external_key_id = serializers.CharField(max_length=150)
    key_manager_id = serializers.UUIDField(required=False)


class KeyManagerIn(StrictSerializer):
    name = serializers.CharField(max_length=100)
    kind = serializers.ChoiceField(choices=ExternalKeyManager.Kind.choices)
    settings = serializers.JSONField()
    credentials = serializers.JSONField(write_only=True)


class EmptyIn(StrictSerializer):
    pass


def _l1(key_id: UUID) -> CustomerKey:
    l1 = CustomerKey.objects.select_related("tenant_key").filter(pk=key_id).first()
    if l1 is None:
        raise KeyNotFound("No such customer key.")
    return l1


def _material(key_id: UUID) -> dict[str, Any]:
    return selectors_external.customer_key_material(_l1(key_id))


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
        return Response(_material(l1.pk), status=status.HTTP_201_CREATED)


class HyokKeyCreateView(KcmAPIView):
    """POST /customer-keys/hyok/: link a key of a registered key manager as an L1."""

    allowed_roles = KEY_ADMIN
    audit_action = "key.create"

    @extend_schema(request=HyokKeyIn, responses={201: OpenApiResponse(description="The L1")})
    def post(self, request: Request) -> Response:
        data = parse(HyokKeyIn, request)
        l1 = hyok.customer_key_create_hyok(
            name=data["name"],
            description=data.get("description", ""),
            manager_id=data["key_manager_id"],
            external_key_id=data["external_key_id"],
        )
        return Response(_material(l1.pk), status=status.HTTP_201_CREATED)


class KeyMaterialView(KcmAPIView):
    """GET /keys/<id>/material/: where each version's material is (KCVs, expiry, references)."""

    allowed_roles = KEY_READERS

    @extend_schema(responses=OpenApiResponse(description="The L1 and its versions' material"))
    def get(self, request: Request, key_id: UUID) -> Response:
        return Response(_material(key_id))


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
            **selectors_external.import_parameters(token),
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
                "material_expires_at": version.material_expires_at,
                "key": _material(key_id),
            }
        )


class DeleteImportedMaterialView(KcmAPIView):
    """POST /keys/<id>/delete-imported-material/: the key waits for the same material again."""

    allowed_roles = KEY_ADMIN
    audit_action = "key.import_delete"

    @extend_schema(request=EmptyIn, responses=OpenApiResponse(description="The L1"))
    def post(self, request: Request, key_id: UUID) -> Response:
        parse(EmptyIn, request)
        byok.material_delete(key_id=key_id)
        return Response(_material(key_id))


class LinkView(KcmAPIView):
    """POST /keys/<id>/link/: HYOK rotation, another external key as the next version."""

    allowed_roles = KEY_ADMIN
    audit_action = "key.rotate"

    @extend_schema(request=LinkIn, responses=OpenApiResponse(description="The L1"))
    def post(self, request: Request, key_id: UUID) -> Response:
        data = parse(LinkIn, request)
        hyok.customer_key_link_version(
            key_id=key_id,
            external_key_id=data["external_key_id"],
            manager_id=data.get("key_manager_id"),
        )
        return Response(_material(key_id))


class SyncView(KcmAPIView):
    """POST /keys/<id>/sync/: ask the key manager now; the state and its reason come back."""

    allowed_roles = KEY_ADMIN
    audit_action = "key.sync"
    audit_success_here = True

    @extend_schema(request=EmptyIn, responses=OpenApiResponse(description="The L1"))
    def post(self, request: Request, key_id: UUID) -> Response:
        parse(EmptyIn, request)
        hyok.hyok_key_sync(key_id=key_id)
        return Response(_material(key_id))

    def audit_details(self, request: Request, response: Response) -> dict[str, Any]:
        data = response.data if isinstance(response.data, dict) else {}
        return {"state": data.get("state")} if response.status_code < 400 else {}


class KeyManagerListView(KcmAPIView):
    """GET, POST /key-managers/: a tenant's external key managers (credentials never shown)."""

    method_roles = {"GET": KEY_READERS, "POST": KEY_ADMIN}
    allowed_roles = KEY_READERS | KEY_ADMIN
    audit_actions = {"POST": "key_manager.create"}

    @extend_schema(responses=OpenApiResponse(description="Key managers"))
    def get(self, request: Request) -> Response:
        managers = ExternalKeyManager.objects.order_by("name")
        return Response({"results": [selectors_external.key_manager_detail(m) for m in managers]})

    @extend_schema(request=KeyManagerIn, responses={201: OpenApiResponse(description="Manager")})
    def post(self, request: Request) -> Response:
        data = parse(KeyManagerIn, request)
        manager = hyok.key_manager_create(
            name=data["name"],
            kind=data["kind"],
            config=data["settings"],
            credentials=data["credentials"],
        )
        return Response(
            selectors_external.key_manager_detail(manager), status=status.HTTP_201_CREATED
        )


class KeyManagerDetailView(KcmAPIView):
    allowed_roles = KEY_READERS

    @extend_schema(responses=OpenApiResponse(description="The key manager"))
    def get(self, request: Request, manager_id: UUID) -> Response:
        manager = ExternalKeyManager.objects.filter(pk=manager_id).first()
        if manager is None:
            raise KeyManagerNotFound()
        return Response(selectors_external.key_manager_detail(manager))
