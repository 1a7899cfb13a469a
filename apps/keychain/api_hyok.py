"""API of HYOK customer keys: the customer's key managers, linking keys, syncing state."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import EmptyIn, KcmAPIView, StrictSerializer, parse, principal_of
from apps.core.approvals import approval_gate
from apps.keychain import hyok, selectors
from apps.keychain.api import KEY_ADMIN, KEY_READERS
from apps.keychain.errors import KeyManagerNotFound
from apps.keychain.models import ExternalKeyManager


class HyokKeyIn(StrictSerializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    key_manager_id = serializers.UUIDField()
    external_key_id = serializers.CharField(max_length=150)


class LinkIn(StrictSerializer):
    external_key_id = serializers.CharField(max_length=150)
    key_manager_id = serializers.UUIDField(required=False)


class KeyManagerIn(StrictSerializer):
    name = serializers.CharField(max_length=100)
    kind = serializers.ChoiceField(choices=ExternalKeyManager.Kind.choices)
    settings = serializers.JSONField()
    credentials = serializers.JSONField(write_only=True)


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
        return Response(selectors.customer_key_material_of(l1.pk), status=status.HTTP_201_CREATED)


class LinkView(KcmAPIView):
    """POST /keys/<id>/link/: HYOK rotation, another external key as the next version."""

    allowed_roles = KEY_ADMIN
    audit_action = "key.rotate"

    @extend_schema(
        request=LinkIn,
        responses={
            200: OpenApiResponse(description="The L1"),
            202: OpenApiResponse(description="The approval request the link became"),
        },
    )
    def post(self, request: Request, key_id: UUID) -> Response:
        data = parse(LinkIn, request)
        params = {"external_key_id": data["external_key_id"]}
        if data.get("key_manager_id") is not None:
            params["key_manager_id"] = str(data["key_manager_id"])
        pending = approval_gate(
            principal=principal_of(request),
            action="key.link_version",
            target=str(key_id),
            params=params,
        )
        if pending is not None:
            return Response(pending, status=status.HTTP_202_ACCEPTED)
        hyok.customer_key_link_version(
            key_id=key_id,
            external_key_id=data["external_key_id"],
            manager_id=data.get("key_manager_id"),
        )
        return Response(selectors.customer_key_material_of(key_id))


class SyncView(KcmAPIView):
    """POST /keys/<id>/sync/: ask the key manager now; the state and its reason come back."""

    allowed_roles = KEY_ADMIN
    audit_action = "key.sync"
    audit_success_here = True

    @extend_schema(request=EmptyIn, responses=OpenApiResponse(description="The L1"))
    def post(self, request: Request, key_id: UUID) -> Response:
        parse(EmptyIn, request)
        hyok.hyok_key_sync(key_id=key_id)
        return Response(selectors.customer_key_material_of(key_id))

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
        return Response({"results": [selectors.key_manager_detail(m) for m in managers]})

    @extend_schema(request=KeyManagerIn, responses={201: OpenApiResponse(description="Manager")})
    def post(self, request: Request) -> Response:
        data = parse(KeyManagerIn, request)
        manager = hyok.key_manager_create(
            name=data["name"],
            kind=data["kind"],
            config=data["settings"],
            credentials=data["credentials"],
        )
        return Response(selectors.key_manager_detail(manager), status=status.HTTP_201_CREATED)


class KeyManagerDetailView(KcmAPIView):
    """GET, DELETE /key-managers/<id>/: one key manager; deleting it (once no customer key
    uses it) releases the PKCS#11 token it registered."""

    method_roles = {"GET": KEY_READERS, "DELETE": KEY_ADMIN}
    allowed_roles = KEY_READERS | KEY_ADMIN
    audit_actions = {"DELETE": "key_manager.delete"}

    @extend_schema(responses=OpenApiResponse(description="The key manager"))
    def get(self, request: Request, manager_id: UUID) -> Response:
        manager = ExternalKeyManager.objects.filter(pk=manager_id).first()
        if manager is None:
            raise KeyManagerNotFound()
        return Response(selectors.key_manager_detail(manager))

    @extend_schema(
        responses={
            204: OpenApiResponse(description="Deleted"),
            202: OpenApiResponse(description="The approval request the deletion became"),
        }
    )
    def delete(self, request: Request, manager_id: UUID) -> Response:
        pending = approval_gate(
            principal=principal_of(request),
            action="key_manager.delete",
            target=str(manager_id),
            params={},
        )
        if pending is not None:
            return Response(pending, status=status.HTTP_202_ACCEPTED)
        hyok.key_manager_delete(manager_id=manager_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
