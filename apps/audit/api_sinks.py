"""Audit sinks API: tenant admins configure where the tenant's events are streamed; auditors
may see them and their delivery state. On the platform host, operators do the same for the
platform log. A webhook's secret is write-only."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.audit import sinks
from apps.audit.models import AuditSink, SinkKind
from apps.core.api import KcmAPIView, StrictSerializer, parse, principal_of
from apps.core.roles import Role

ADMIN = frozenset({Role.TENANT_ADMIN, Role.PLATFORM_OPERATOR})
VIEWERS = ADMIN | {Role.AUDITOR}


class SinkIn(StrictSerializer):
    kind = serializers.ChoiceField(choices=SinkKind.choices)
    name = serializers.CharField(required=False, max_length=100, allow_blank=True)
    host = serializers.CharField(required=False, max_length=255)
    port = serializers.IntegerField(required=False, min_value=1, max_value=65535)
    tls = serializers.BooleanField(required=False, default=False)
    ca_pem = serializers.CharField(required=False, max_length=65536)
    url = serializers.CharField(required=False, max_length=2000)
    secret = serializers.CharField(required=False, min_length=32, max_length=256, write_only=True)
    # Deliver the log from its first event, not only what is sealed from now on.
    from_start = serializers.BooleanField(required=False, default=False)


class SinkOut(serializers.ModelSerializer):
    destination = serializers.SerializerMethodField()

    class Meta:
        model = AuditSink
        fields = ["id", "kind", "name", "destination", "host", "port", "tls", "url", "cursor",
                  "failures", "last_error", "last_attempt_at", "last_delivered_at",
                  "next_attempt_at", "created_by", "created_at"]  # fmt: skip

    def get_destination(self, sink: AuditSink) -> str:
        return sinks.sink_destination(sink)


class _SinkAudit:
    kwargs: dict[str, Any]

    def audit_target(self, request: Request, response: Response) -> tuple[str, int | None]:
        if "sink_id" in self.kwargs:
            return f"audit_sink:{self.kwargs['sink_id']}", None
        return "", None


class SinkListView(_SinkAudit, KcmAPIView):
    """GET, POST /audit/sinks/: the tenant's syslog and webhook sinks."""

    method_roles = {"GET": VIEWERS, "POST": ADMIN}
    allowed_roles = VIEWERS
    audit_actions = {"POST": "audit.sink.create"}

    @extend_schema(
        operation_id="audit_sinks_list",
        responses=inline_serializer("AuditSinkList", {"results": SinkOut(many=True)}),
    )
    def get(self, request: Request) -> Response:
        return Response({"results": SinkOut(sinks.sink_list(), many=True).data})

    @extend_schema(request=SinkIn, responses={201: SinkOut})
    def post(self, request: Request) -> Response:
        data = parse(SinkIn, request)
        sink = sinks.sink_create(data=data, actor=principal_of(request).actor)
        return Response(SinkOut(sink).data, status=status.HTTP_201_CREATED)


class SinkDetailView(_SinkAudit, KcmAPIView):
    """GET, DELETE /audit/sinks/<id>/: one sink and its delivery state (cursor, last error,
    next attempt)."""

    method_roles = {"GET": VIEWERS, "DELETE": ADMIN}
    allowed_roles = VIEWERS
    audit_actions = {"DELETE": "audit.sink.delete"}

    @extend_schema(operation_id="audit_sink_retrieve", responses=SinkOut)
    def get(self, request: Request, sink_id: UUID) -> Response:
        return Response(SinkOut(sinks.sink_get(sink_id)).data)

    @extend_schema(responses={204: OpenApiResponse(description="Deleted")})
    def delete(self, request: Request, sink_id: UUID) -> Response:
        sinks.sink_delete(sink_id=sink_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
