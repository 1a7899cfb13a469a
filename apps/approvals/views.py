"""Console page of approvals: pending requests with approve, deny and withdraw buttons, and
"run again" on the requester's FAILED ones. The same page on the platform console lists the
platform's requests (terminate a tenant) for its operators."""

from __future__ import annotations

from uuid import UUID

from django import forms
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from apps.approvals import policy, selectors, services
from apps.approvals.actions import ACTIONS
from apps.approvals.ledgers import PLATFORM, TENANT, Ledger
from apps.approvals.models import RequestState
from apps.approvals.platform.actions import platform_policy
from apps.core.console import console_view, invalid_form, run_action
from apps.core.roles import Role
from apps.mfa.signin import step_up_for_decision
from apps.tenants.access import person_of

READERS = [Role.KEY_ADMIN, Role.TENANT_ADMIN, Role.AUDITOR]
DECIDERS = [Role.KEY_ADMIN, Role.TENANT_ADMIN]
OPERATORS = [Role.PLATFORM_OPERATOR]


class DenyForm(forms.Form):
    reason = forms.CharField(max_length=500)


class PolicyForm(forms.Form):
    actions = forms.MultipleChoiceField(
        choices=[(name, action.label) for name, action in sorted(ACTIONS.items())],
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    required = forms.IntegerField(min_value=1, max_value=policy.MAX_REQUIRED, initial=2)
    approver_role = forms.ChoiceField(choices=[(r, r) for r in policy.APPROVER_ROLES])
    expiry_days = forms.IntegerField(min_value=1, max_value=policy.MAX_EXPIRY_DAYS, initial=7)


def _page(request: HttpRequest, ledger: Ledger) -> HttpResponse:
    principal = request.kcm_principal  # type: ignore[attr-defined]
    requests = selectors.request_list(ledger=ledger)
    person = person_of(principal)
    now = timezone.now()
    rows = [
        {
            **selectors.request_body(r),
            "label": ledger.label(r.action),
            "mine": person is not None and r.requester_person == person,
            "retryable": r.state == RequestState.FAILED and r.expires_at > now,
        }
        for r in requests
    ]
    platform = ledger is PLATFORM
    policy_body = platform_policy() if platform else policy.policy_body(policy.policy_get())
    return render(
        request,
        "approvals/index.html",
        {
            "pending": [r for r in rows if r["state"] == RequestState.PENDING],
            "decided": [r for r in rows if r["state"] != RequestState.PENDING][:50],
            "policy": policy_body,
            "platform": platform,
            "can_decide": principal.holds_any(OPERATORS if platform else DECIDERS),
            "deny_form": DenyForm(),
            "policy_form": PolicyForm(initial=policy_body)
            if not platform and Role.TENANT_ADMIN in principal.roles
            else None,
        },
    )


@console_view(READERS)
def index(request: HttpRequest) -> HttpResponse:
    return _page(request, TENANT)


@console_view(OPERATORS)
def platform_index(request: HttpRequest) -> HttpResponse:
    """The platform's approval requests (terminate a tenant), on the platform console."""
    return _page(request, PLATFORM)


def _decide(request: HttpRequest, request_id: UUID, action: str, ledger: Ledger) -> HttpResponse:
    principal = request.kcm_principal  # type: ignore[attr-defined]
    audit = f"approval.{action}"
    next_url = reverse("console:approvals")
    if (stepped := step_up_for_decision(request, action, next_url)) is not None:
        return stepped  # a fresh second factor first (apps.mfa), then back here
    if action == "deny":
        form = DenyForm(request.POST)
        if not form.is_valid():
            return run_action(request, invalid_form(form), "", next_url, audit_action=audit)
        reason = form.cleaned_data["reason"]
        return run_action(
            request,
            lambda: services.request_deny(
                request_id=request_id, principal=principal, reason=reason, ledger=ledger
            ),
            "Request denied.",
            next_url,
            audit_action=audit,
        )
    act = {
        "approve": services.request_approve,
        "withdraw": services.request_withdraw,
        "execute": services.request_execute,
    }
    if action not in act:
        raise Http404
    return run_action(
        request,
        lambda: act[action](request_id=request_id, principal=principal, ledger=ledger),
        lambda row: (
            f"Request {row.state.lower()}."
            if row.state != RequestState.PENDING
            else "Approved; waiting for more approvals."
        ),
        next_url,
        audit_action=audit,
    )


@console_view(DECIDERS)
@require_POST
def decide(request: HttpRequest, request_id: UUID, action: str) -> HttpResponse:
    return _decide(request, request_id, action, TENANT)


@console_view(OPERATORS)
@require_POST
def platform_decide(request: HttpRequest, request_id: UUID, action: str) -> HttpResponse:
    return _decide(request, request_id, action, PLATFORM)


@console_view([Role.TENANT_ADMIN])
@require_POST
def policy_set(request: HttpRequest) -> HttpResponse:
    """Set the approval policy from the console (or ask for approval of the change)."""
    audit = "approval.policy.set"
    next_url = reverse("console:approvals")
    form = PolicyForm(request.POST)
    if not form.is_valid():
        return run_action(request, invalid_form(form), "", next_url, audit_action=audit)
    data = form.cleaned_data
    return run_action(
        request,
        lambda: services.policy_set(
            principal=request.kcm_principal,  # type: ignore[attr-defined]
            actions=list(data["actions"]),
            required=data["required"],
            approver_role=data["approver_role"],
            expiry_days=data["expiry_days"],
        ),
        lambda outcome: (
            "The change waits for approval."
            if isinstance(outcome, dict)
            else "Approval policy saved."
        ),
        next_url,
        audit_action=audit,
    )
