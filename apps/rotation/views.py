"""Console pages of rotation: jobs with a live progress bar, rotate buttons, policies."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from apps.core.approvals import console_gate
from apps.core.console import console_view, invalid_form, run_action
from apps.core.roles import Role
from apps.keychain.selectors import chain_tree
from apps.rotation import policies, selectors, services
from apps.rotation.forms import DefaultForm, PolicyForm, RotateForm
from apps.rotation.models import RewrapJob, RotationPolicy

READERS = [Role.KEY_ADMIN, Role.TENANT_ADMIN, Role.AUDITOR]
ADMIN = [Role.KEY_ADMIN]


def _keys() -> list[dict[str, Any]]:
    """Every key, each level in turn, as (id, level, label) rows for buttons and selects."""
    rows = []
    for l1 in chain_tree():
        rows.append({"id": l1["id"], "level": "L1", "label": f"L1 {l1['name']}", "key": l1})
        l2 = l1["tenant_key"]
        rows.append({"id": l2["id"], "level": "L2", "label": f"L2 of {l1['name']}", "key": l2})
        for l3 in l2["service_keys"]:
            rows.append({"id": l3["id"], "level": "L3", "label": f"L3 {l3['name']}", "key": l3})
    return rows


@console_view(READERS)
def index(request: HttpRequest) -> HttpResponse:
    own = {str(p.key_id): p for p in RotationPolicy.objects.exclude(key_id=None)}
    keys = [
        {**row, "policy": own.get(row["id"])}
        for row in _keys()
        if row["key"]["state"] != "DESTROYED"
    ]
    return render(
        request,
        "rotation/index.html",
        {
            "jobs": selectors.job_list(limit=50),
            "keys": keys,
            "defaults": selectors.rotation_defaults(),
            "can_manage": Role.KEY_ADMIN in request.kcm_principal.roles,  # type: ignore[attr-defined]
            "default_form": DefaultForm(),
            "policy_form": PolicyForm(),
        },
    )


@console_view(READERS)
def job(request: HttpRequest, job_id: UUID) -> HttpResponse:
    detail = selectors.job_detail(selectors.job_get(job_id=job_id))
    return render(
        request,
        "rotation/job.html",
        {
            "job": detail,
            "percent": round(detail["progress"] * 100),
            "can_manage": Role.KEY_ADMIN in request.kcm_principal.roles,  # type: ignore[attr-defined]
            "poll_url": reverse("api:rotation-job", args=[job_id]),
        },
    )


@console_view(ADMIN)
@require_POST
def key_rotate(request: HttpRequest, key_id: UUID) -> HttpResponse:
    form = RotateForm(request.POST)
    dry_run = form.is_valid() and form.cleaned_data["dry_run"]
    if not dry_run:
        gated = console_gate(
            request,
            action="key.rotate",
            target=str(key_id),
            params={},
            next_url=reverse("console:rotation"),
        )
        if gated is not None:
            return gated
    started: list[services.Rotation] = []
    response = run_action(
        request,
        lambda: started.append(services.rotation_start(key_id=key_id, dry_run=dry_run)),
        "Dry run started." if dry_run else "Key rotated.",
        reverse("console:rotation"),
        audit_action="key.rotate",
    )
    if started and started[0].job is not None:
        return redirect("console:rotation-job", job_id=started[0].job.pk)
    return response


@console_view(ADMIN)
@require_POST
def chain_key_rotate(request: HttpRequest, key_id: UUID) -> HttpResponse:
    """The rotate button of the key chain page: rotate (queueing the rewrap), back to the chain."""
    gated = console_gate(
        request,
        action="key.rotate",
        target=str(key_id),
        params={},
        next_url=reverse("console:keys"),
    )
    if gated is not None:
        return gated
    return run_action(
        request,
        lambda: services.key_rotate_with_rewrap(key_id=key_id),
        "Done: rotate.",
        reverse("console:keys"),
        audit_action="key.rotate",
    )


@console_view(ADMIN)
@require_POST
def key_rewrap(request: HttpRequest, key_id: UUID) -> HttpResponse:
    started: list[RewrapJob] = []
    response = run_action(
        request,
        lambda: started.append(services.rewrap_start(key_id=key_id)),
        "Rewrap started.",
        reverse("console:rotation"),
        audit_action="rotation.job.start",
    )
    if started:
        return redirect("console:rotation-job", job_id=started[0].pk)
    return response


@console_view(ADMIN)
@require_POST
def job_action(request: HttpRequest, job_id: UUID, action: str) -> HttpResponse:
    act = {"cancel": services.rewrap_job_cancel, "resume": services.rewrap_job_resume}
    if action not in act:
        raise Http404
    return run_action(
        request,
        lambda: act[action](job_id=job_id),
        "Job cancelled." if action == "cancel" else "Job queued again.",
        reverse("console:rotation-job", args=[job_id]),
        audit_action=f"rotation.job.{action}",
    )


@console_view(ADMIN)
@require_POST
def default_set(request: HttpRequest) -> HttpResponse:
    form = DefaultForm(request.POST)
    back = reverse("console:rotation")
    if not form.is_valid():
        return run_action(request, invalid_form(form), "", back, audit_action="rotation.policy.set")
    data = form.cleaned_data
    period, max_usage = data["period_days"], data["max_usage"]
    if period is None and max_usage is None:
        return run_action(
            request,
            lambda: policies.rotation_default_clear(level=data["level"]),
            f"Default policy for {data['level']} cleared.",
            back,
            audit_action="rotation.policy.clear",
        )
    return run_action(
        request,
        lambda: policies.rotation_default_set(
            level=data["level"], period_days=period, max_usage=max_usage
        ),
        f"Default policy for {data['level']} saved.",
        back,
        audit_action="rotation.policy.set",
    )


@console_view(ADMIN)
@require_POST
def key_policy_set(request: HttpRequest, key_id: UUID) -> HttpResponse:
    form = PolicyForm(request.POST)
    back = reverse("console:rotation")
    if not form.is_valid():
        return run_action(request, invalid_form(form), "", back, audit_action="rotation.policy.set")
    data = form.cleaned_data
    if data["period_days"] is None and data["max_usage"] is None:
        return run_action(
            request,
            lambda: policies.rotation_policy_clear(key_id=key_id),
            "The key follows the tenant default again.",
            back,
            audit_action="rotation.policy.clear",
        )
    return run_action(
        request,
        lambda: policies.rotation_policy_set(
            key_id=key_id, period_days=data["period_days"], max_usage=data["max_usage"]
        ),
        "Key policy saved.",
        back,
        audit_action="rotation.policy.set",
    )
