"""Audit API: search, verify, export. Read-only for everyone: no endpoint edits or deletes."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import FileResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.audit import export, selectors, services
from apps.audit.models import AuditEvent, AuditExport
from apps.core.api import KcmAPIView, StrictSerializer, parse, principal_of
from apps.core.errors import BrokerUnavailable
from apps.core.pagination import CursorPagination
from apps.core.roles import Role

READERS = frozenset({Role.AUDITOR, Role.TENANT_ADMIN, Role.PLATFORM_OPERATOR})


class EventOut(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "seq", "occurred_at", "actor", "role", "source_ip", "user_agent", "request_id",
            "action", "target", "target_version", "outcome", "error_code", "details",
            "prev_hash", "hash",
        ]  # fmt: skip


class SeqPagination(CursorPagination):
    ordering = "-seq"


class EventListView(KcmAPIView):
    """Search: ?since=&until= (ISO 8601 with zone), ?action= and ?actor= (prefix), ?target=,
    ?outcome=success|denied|error; newest first, cursor-paginated."""

    allowed_roles = READERS
    pagination_class = SeqPagination  # documents the page's shape and parameters

    @extend_schema(responses=EventOut(many=True))
    def get(self, request: Request) -> Response:
        filters = selectors.clean_filters(request.query_params)
        paginator = self.pagination_class()
        page: Any = paginator.paginate_queryset(selectors.event_search(filters), request, view=self)
        return paginator.get_paginated_response(EventOut(page, many=True).data)


class VerifyView(KcmAPIView):
    """Verify the chain and its signed checkpoints; reports the first bad event."""

    allowed_roles = READERS

    @extend_schema(responses=OpenApiResponse(description="{ok, checked, first_bad}"))
    def get(self, request: Request) -> Response:
        return Response(services.audit_verify())


class ExportIn(StrictSerializer):
    format = serializers.ChoiceField(choices=export.FORMATS)
    since = serializers.CharField(required=False)
    until = serializers.CharField(required=False)
    action = serializers.CharField(required=False, max_length=64)
    actor = serializers.CharField(required=False, max_length=200)
    target = serializers.CharField(required=False, max_length=200)
    outcome = serializers.CharField(required=False, max_length=8)


class ExportOut(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()

    class Meta:
        model = AuditExport
        fields = ["id", "state", "format", "filters", "total", "done", "progress", "requested_by",
                  "created_at", "finished_at", "error", "error_code"]  # fmt: skip

    def get_progress(self, job: AuditExport) -> float:
        return 1.0 if job.state == "succeeded" else (job.done / job.total if job.total else 0.0)


class ExportListView(KcmAPIView):
    allowed_roles = READERS
    audit_actions = {"POST": "audit.export"}
    schema_refusals = {"POST": ("503",)}  # broker_unavailable: the job could not be queued

    @extend_schema(
        responses=inline_serializer("AuditExportList", {"results": ExportOut(many=True)})
    )
    def get(self, request: Request) -> Response:
        return Response({"results": ExportOut(AuditExport.objects.all()[:50], many=True).data})

    @extend_schema(request=ExportIn, responses={202: ExportOut})
    def post(self, request: Request) -> Response:
        data = parse(ExportIn, request)
        job = export_start(data, principal_of(request).actor)
        return Response(ExportOut(job).data, status=status.HTTP_202_ACCEPTED)


def export_start(data: dict[str, Any], actor: str) -> AuditExport:
    with transaction.atomic():
        job = export.export_request(
            filters={k: v for k, v in data.items() if k != "format"},
            format=data["format"],
            requested_by=actor,
        )
        transaction.on_commit(lambda: _send(job))
    return job


def _send(job: AuditExport) -> None:
    """Queue the export's task; if the broker refuses, the export is marked failed
    (`broker_unavailable`) and the caller gets a 503 at once: nothing waits on the broker, and
    no export stays queued that nothing will run."""
    from apps.audit.tasks import export_run

    try:
        export_run.delay(str(job.pk))
    except Exception as exc:
        export.export_not_queued(export_id=str(job.pk), reason=type(exc).__name__)
        raise BrokerUnavailable() from exc


class ExportDetailView(KcmAPIView):
    allowed_roles = READERS

    @extend_schema(responses=ExportOut)
    def get(self, request: Request, export_id: str) -> Response:
        job = AuditExport.objects.filter(pk=export_id).first()
        if job is None:
            from apps.core.errors import NotFound

            raise NotFound("No such export.", code="export_not_found")
        return Response(ExportOut(job).data)


class ExportDownloadView(KcmAPIView):
    allowed_roles = READERS
    audit_action = "audit.export_download"
    schema_refusals = {"GET": ("409",)}  # the export has not finished

    @extend_schema(responses=OpenApiResponse(description="The file (CSV or JSON Lines)"))
    def get(self, request: Request, export_id: str) -> Any:
        job, path = export.export_file(export_id=export_id)
        content_type = "text/csv" if job.format == "csv" else "application/x-ndjson"
        return FileResponse(
            path.open("rb"), as_attachment=True, filename=path.name, content_type=content_type
        )


class ExportManifestView(KcmAPIView):
    allowed_roles = READERS

    @extend_schema(responses=OpenApiResponse(description="The signed manifest"))
    def get(self, request: Request, export_id: str) -> Response:
        job = AuditExport.objects.filter(pk=export_id, state="succeeded").first()
        if job is None:
            from apps.core.errors import NotFound

            raise NotFound("No finished export with this id.", code="export_not_found")
        response = Response(job.manifest)
        response["Content-Disposition"] = f'attachment; filename="{job.pk}.manifest.json"'
        return response


class PublicKeyView(KcmAPIView):
    """The platform's audit signing key (PEM), to pin in offline verification."""

    allowed_roles = READERS

    @extend_schema(responses=OpenApiResponse(description="PEM public key and fingerprint"))
    def get(self, request: Request) -> Response:
        key = services.signing_key()
        return Response(
            {
                "fingerprint": key.fingerprint,
                "public_key_pem": export.public_key_pem(bytes(key.public_key_der)),
            }
        )
