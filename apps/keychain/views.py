"""Console pages of the key chain: the tree, creation forms and lifecycle buttons."""

from __future__ import annotations

from uuid import UUID

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST

from apps.core.approvals import console_gate
from apps.core.console import console_view, invalid_form, run_action
from apps.core.roles import Role
from apps.keychain import hyok, selectors, services, version_deletion
from apps.keychain.forms import CustomerKeyForm, ScheduleDeletionForm, ServiceKeyForm

READERS = [Role.KEY_ADMIN, Role.TENANT_ADMIN, Role.AUDITOR]


@console_view(list(Role))
def dashboard(request: HttpRequest) -> HttpResponse:
    """A tenant console's home: the key chain in numbers (the platform's is apps.tenants')."""
    return render(request, "console/dashboard.html", {"summary": selectors.chain_summary()})


@console_view(READERS)
def chain(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "keychain/chain.html",
        {
            "tree": selectors.chain_tree(),
            "can_manage": Role.KEY_ADMIN in request.kcm_principal.roles,  # type: ignore[attr-defined]
            "l1_form": CustomerKeyForm(),
            "l3_form": ServiceKeyForm(),
            "deletion_form": ScheduleDeletionForm(),
        },
    )


@console_view([Role.KEY_ADMIN])
@require_POST
def customer_key_create(request: HttpRequest) -> HttpResponse:
    audit = "key.create"
    form = CustomerKeyForm(request.POST)
    if not form.is_valid():
        return run_action(
            request, invalid_form(form), "", reverse("console:keys"), audit_action=audit
        )
    data = form.cleaned_data
    return run_action(
        request,
        lambda: services.customer_key_create(name=data["name"], description=data["description"]),
        f"Customer key {data['name']} created in the HSM.",
        reverse("console:keys"),
        audit_action=audit,
    )


@console_view([Role.KEY_ADMIN])
@require_POST
def service_key_create(request: HttpRequest) -> HttpResponse:
    audit = "key.create"
    form = ServiceKeyForm(request.POST)
    if not form.is_valid():
        return run_action(
            request, invalid_form(form), "", reverse("console:keys"), audit_action=audit
        )
    data = form.cleaned_data
    l1 = data.get("customer_key")
    return run_action(
        request,
        lambda: services.service_key_create(
            name=data["name"],
            description=data["description"],
            customer_key_id=l1.pk if l1 else None,
        ),
        f"Service key {data['name']} created.",
        reverse("console:keys"),
        audit_action=audit,
    )


@console_view([Role.KEY_ADMIN])
@require_POST
def key_action(request: HttpRequest, key_id: UUID, action: str) -> HttpResponse:
    simple = services.LIFECYCLE_ACTIONS
    audit = "key." + action.replace("-", "_")
    if action == "schedule-deletion":
        form = ScheduleDeletionForm(request.POST)
        if not form.is_valid():
            return run_action(
                request, invalid_form(form), "", reverse("console:keys"), audit_action=audit
            )
        days = form.cleaned_data["pending_days"]
        gated = console_gate(
            request,
            action=audit,
            target=str(key_id),
            params={"pending_days": days},
            next_url=reverse("console:keys"),
        )
        if gated is not None:
            return gated
        return run_action(
            request,
            lambda: services.key_schedule_deletion(key_id=key_id, pending_days=days),
            f"Deletion scheduled in {days} days.",
            reverse("console:keys"),
            audit_action=audit,
        )
    if action not in simple:
        raise Http404
    gated = console_gate(
        request, action=audit, target=str(key_id), params={}, next_url=reverse("console:keys")
    )
    if gated is not None:
        return gated
    return run_action(
        request,
        lambda: simple[action](key_id=key_id),
        f"Done: {action}.",
        reverse("console:keys"),
        audit_action=audit,
    )


@console_view([Role.KEY_ADMIN])
@require_POST
def key_version_action(
    request: HttpRequest, key_id: UUID, version: int, action: str
) -> HttpResponse:
    """Schedule or cancel the deletion of one L1 version (the versions table of the chain)."""
    audit = "key.version." + action.replace("-", "_")
    if action == "schedule-deletion":
        form = ScheduleDeletionForm(request.POST)
        if not form.is_valid():
            return run_action(
                request, invalid_form(form), "", reverse("console:keys"), audit_action=audit
            )
        days = form.cleaned_data["pending_days"]
        return run_action(
            request,
            lambda: version_deletion.l1_version_schedule_deletion(
                key_id=key_id, version=version, pending_days=days
            ),
            f"Deletion of version {version} scheduled in {days} days.",
            reverse("console:keys"),
            audit_action=audit,
        )
    if action != "cancel-deletion":
        raise Http404
    return run_action(
        request,
        lambda: version_deletion.l1_version_cancel_deletion(key_id=key_id, version=version),
        f"Deletion of version {version} cancelled; it is retired again.",
        reverse("console:keys"),
        audit_action=audit,
    )


@console_view([Role.KEY_ADMIN])
@require_POST
def hyok_sync(request: HttpRequest, key_id: UUID) -> HttpResponse:
    return run_action(
        request,
        lambda: hyok.hyok_key_sync(key_id=key_id),
        lambda l1: f"Key manager asked: the key is {l1.state}. {l1.state_reason}".strip(),
        reverse("console:keys"),
        audit_action="key.sync",
    )
