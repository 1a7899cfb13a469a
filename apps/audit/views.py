"""Console pages of the audit log: search, verification, exports with progress."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from apps.audit import selectors, services
from apps.audit.api import READERS, export_start
from apps.audit.models import AuditExport
from apps.core.console import console_view
from apps.core.errors import KcmError

PAGE = 50


@console_view(READERS)
def events(request: HttpRequest) -> HttpResponse:
    error = ""
    try:
        filters = selectors.clean_filters(request.GET)
        queryset = selectors.event_search(filters)
    except KcmError as exc:
        error, filters, queryset = exc.detail, {}, selectors.event_search({})
    before = request.GET.get("before", "")
    if before.isdigit():
        queryset = queryset.filter(seq__lt=int(before))
    page = list(queryset[: PAGE + 1])
    return render(
        request,
        "audit/events.html",
        {
            "events": page[:PAGE],
            "next_before": page[PAGE - 1].seq if len(page) > PAGE else None,
            "filters": filters,
            "error": error,
            "query": "&".join(f"{k}={v}" for k, v in filters.items()),
        },
    )


@console_view(READERS)
def verify(request: HttpRequest) -> HttpResponse:
    return render(request, "audit/verify.html", {"report": services.audit_verify()})


@console_view(READERS)
def export_create(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return redirect("console:audit-events")
    data = {k: v for k, v in request.POST.items() if k in (*selectors.FILTERS, "format") and v}
    data.setdefault("format", "jsonl")
    try:
        job = export_start(data, request.kcm_principal.actor)  # type: ignore[attr-defined]
    except KcmError as exc:
        return render(
            request,
            "console/refused.html",
            {"title": "Export refused", "detail": exc.detail},
            status=exc.status,  # 400 for bad filters, 503 when the job cannot be queued
        )
    return redirect("console:audit-export", export_id=job.pk)


@console_view(READERS)
def export_detail(request: HttpRequest, export_id: str) -> HttpResponse:
    job = AuditExport.objects.filter(pk=export_id).first()
    if job is None:
        raise Http404
    return render(request, "audit/export.html", {"job": job})
