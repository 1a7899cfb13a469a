"""The approvals that guard admin roles and tenant termination cannot be short-cut: not by the
member being promoted, not by a second token or account of the requester, not by inviting a
second account instead, and not by racing approvals or retries (each runs exactly once)."""

from __future__ import annotations

import threading
from typing import Any

from django.contrib.auth.models import User
from django.db import connection
from django_tenants.utils import schema_context, tenant_context

from apps.approvals import services
from apps.approvals.ledgers import PLATFORM
from apps.approvals.models import ApprovalRequest
from apps.approvals.platform.models import PlatformApprovalRequest
from apps.audit import services as audit
from apps.audit.models import AuditEvent
from apps.audit.sealer import seal_here
from apps.core.errors import KcmError
from apps.core.roles import Role
from apps.core.tenancy import Principal
from apps.tenants import services as tenants
from apps.tenants.models import Membership, Tenant, TenantStatus
from apps.tenants.tokens import api_token_create
from tests.approvals.conftest import add_key_admin
from tests.approvals.test_platform import add_operator
from tests.conftest import PASSWORD, World
from tests.helpers import Api, assert_problem, host_of


def _gate_member_changes(api: Any, world: World) -> Api:
    for n in range(3):
        add_key_admin(world, "acme", f"approver-{n}")
    admin = api("acme", Role.TENANT_ADMIN)
    policy = {"actions": ["member.role_change"], "required": 2}
    assert admin.call("PUT", "/api/v1/approvals/policy/", policy).status_code == 200
    return admin


def test_the_member_being_promoted_cannot_approve_it(api: Any, world: World) -> None:
    admin = _gate_member_changes(api, world)
    target = User.objects.get(username="approver-0")  # a key admin, so an approver
    member = Membership.objects.get(user=target, tenant=world.tenants["acme"])
    asked = admin.call("PATCH", f"/api/v1/members/{member.pk}/", {"roles": ["tenant_admin"]})
    assert asked.status_code == 202, asked.content
    _, token = api_token_create(
        tenant=world.tenants["acme"], name="own", role=Role.KEY_ADMIN, created_by_id=target.pk
    )
    own = Api(host_of("acme"), token)
    path = f"/api/v1/approvals/{asked.json_body['id']}/"
    assert_problem(own.post(path + "approve/", {}), 403, "subject_cannot_approve")
    assert_problem(own.post(path + "deny/", {"reason": "x"}), 403, "subject_cannot_approve")
    assert Membership.objects.get(pk=member.pk).roles == [Role.KEY_ADMIN]


def test_the_requesters_second_token_cannot_approve_a_promotion(api: Any, world: World) -> None:
    admin = _gate_member_changes(api, world)
    user = world.users[("acme", Role.TENANT_ADMIN)]
    tenants.membership_set(
        tenant=world.tenants["acme"], user=user, roles=[Role.TENANT_ADMIN, Role.KEY_ADMIN]
    )
    auditor = Membership.objects.get(
        user=world.users[("acme", Role.AUDITOR)], tenant=world.tenants["acme"]
    )
    asked = admin.call("PATCH", f"/api/v1/members/{auditor.pk}/", {"roles": ["tenant_admin"]})
    _, second = api_token_create(
        tenant=world.tenants["acme"], name="mine", role=Role.KEY_ADMIN, created_by_id=user.pk
    )
    response = Api(host_of("acme"), second).post(
        f"/api/v1/approvals/{asked.json_body['id']}/approve/", {}
    )
    assert_problem(response, 403, "requester_cannot_approve")


def test_an_admin_cannot_invite_round_a_gated_promotion(api: Any, world: World) -> None:
    admin = _gate_member_changes(api, world)
    invite = admin.post("/api/v1/invitations/", {"roles": ["tenant_admin"]})
    assert_problem(invite, 409, "approval_required")
    # Where the policy does not gate promotions, an admin invites an admin as before.
    other = api("globex", Role.TENANT_ADMIN).post(
        "/api/v1/invitations/", {"roles": ["tenant_admin"]}
    )
    assert other.status_code == 201, other.content


def test_the_requesters_second_operator_token_cannot_approve_a_termination(
    api: Any, world: World, settings: Any
) -> None:
    settings.KCM_PLATFORM_APPROVALS_REQUIRED = 2
    for n in range(2):
        add_operator(world, f"operator-{n}")
    tenants.tenant_create(slug="doomed")
    ops = api("platform", Role.PLATFORM_OPERATOR)
    asked = ops.post("/api/v1/platform/tenants/doomed/terminate/", {}).json_body
    operator = world.users[("platform", Role.PLATFORM_OPERATOR)]
    _, second = api_token_create(
        tenant=world.tenants["platform"],
        name="ops too",
        role=Role.PLATFORM_OPERATOR,
        created_by_id=operator.pk,
    )
    response = Api("localhost", second).post(
        f"/api/v1/platform/approvals/{asked['id']}/approve/", {}
    )
    assert_problem(response, 403, "requester_cannot_approve")
    assert Tenant.objects.get(slug="doomed").status == TenantStatus.ACTIVE


# --- races: committed rows, separate connections -----------------------------------------------


def _in_threads(*works: Any) -> list[Any]:
    """Run each callable in its own thread (own connection), started together; their results
    (or exceptions) in order."""
    boxes: list[list[Any]] = [[] for _ in works]
    start = threading.Barrier(len(works))

    def run(work: Any, box: list[Any]) -> None:
        try:
            start.wait(10)
            box.append(work())
        except BaseException as exc:  # reported by the caller
            box.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(w, b)) for w, b in zip(works, boxes, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return [box[0] if box else None for box in boxes]


def _operator(user: User, platform: Tenant) -> Principal:
    return Principal(
        kind="user",
        id=user.pk,
        label=user.username,
        roles=frozenset({Role.PLATFORM_OPERATOR}),
        tenant_id=platform.pk,
        user_id=user.pk,
    )


def test_concurrent_approvals_and_retries_terminate_a_tenant_exactly_once(world: World) -> None:
    """Three operators approve a 2-of-3 termination at once: two approve, the one reaching 2
    terminates, the third finds it decided. Then a FAILED run retried twice at once by its
    requester runs once."""
    names = ["racer-requester", "racer-0", "racer-1", "racer-2"]
    slugs = ["racer-one", "racer-two"]

    def setup() -> tuple[str, str]:
        platform = Tenant.objects.get(schema_name="public")
        for name in names:
            user = tenants.user_create(username=name, password=PASSWORD)
            tenants.membership_set(tenant=platform, user=user, roles=[Role.PLATFORM_OPERATOR])
        requester = _operator(User.objects.get(username=names[0]), platform)
        ids = []
        for slug in slugs:
            tenants.tenant_create(slug=slug)
            ids.append(
                str(
                    services.request_create(
                        principal=requester,
                        action="tenant.terminate",
                        target=slug,
                        params={"reason": "race"},
                        required=2,
                        approver_role=Role.PLATFORM_OPERATOR,
                        expiry_days=7,
                        ledger=PLATFORM,
                    ).pk
                )
            )
        return ids[0], ids[1]

    def approve(request_id: str, name: str) -> str:
        platform = Tenant.objects.get(schema_name="public")
        with schema_context("public"):
            try:
                return services.request_approve(
                    request_id=request_id,
                    principal=_operator(User.objects.get(username=name), platform),
                    ledger=PLATFORM,
                ).state
            except KcmError as exc:
                return exc.code

    def execute(request_id: str) -> str:
        platform = Tenant.objects.get(schema_name="public")
        with schema_context("public"):
            try:
                return services.request_execute(
                    request_id=request_id,
                    principal=_operator(User.objects.get(username=names[0]), platform),
                    ledger=PLATFORM,
                ).state
            except KcmError as exc:
                return exc.code

    (ids,) = _in_threads(setup)
    assert isinstance(ids, tuple), ids
    first, second = ids
    try:
        outcomes = _in_threads(*[lambda n=name: approve(first, n) for name in names[1:]])
        assert sorted(outcomes) == ["EXECUTED", "PENDING", "approval_not_pending"], outcomes

        # The second request fails when approved (its requester is no operator for a moment),
        # then the requester, an operator again, retries it twice at once.
        def demote(roles: list[str]) -> None:
            Membership.objects.filter(user__username=names[0]).update(roles=roles)

        _in_threads(lambda: demote([Role.AUDITOR]))
        outcomes = _in_threads(*[lambda n=name: approve(second, n) for name in names[1:3]])
        assert sorted(outcomes) == ["FAILED", "PENDING"], outcomes
        _in_threads(lambda: demote([Role.PLATFORM_OPERATOR]))
        retries = _in_threads(lambda: execute(second), lambda: execute(second))
        assert sorted(retries) == ["EXECUTED", "approval_not_pending"], retries

        def check() -> tuple[list[str], int, int, bool]:
            with schema_context("public"):
                seal_here()
                return (
                    [Tenant.objects.get(slug=s).status for s in slugs],
                    AuditEvent.objects.filter(
                        action="tenant.terminate", target__in=slugs, outcome="success"
                    ).count(),
                    AuditEvent.objects.filter(
                        action="approval.execute", target__in=ids, outcome="success"
                    ).count(),
                    audit.audit_verify()["ok"],
                )

        (checked,) = _in_threads(check)
        assert checked == (["TERMINATED", "TERMINATED"], 2, 2, True), checked
    finally:

        def cleanup() -> None:
            PlatformApprovalRequest.objects.filter(pk__in=ids).delete()
            Membership.objects.filter(user__username__in=names).delete()
            User.objects.filter(username__in=names).delete()
            for slug in slugs:
                tenant = Tenant.objects.filter(slug=slug).first()
                if tenant is not None and tenant.status != TenantStatus.TERMINATED:
                    tenants.tenant_terminate(tenant=tenant)
            Tenant.objects.filter(slug__in=slugs).delete()

        _in_threads(cleanup)


def test_concurrent_approvals_of_a_promotion_run_it_exactly_once(world: World) -> None:
    """Three key admins approve a 2-of-3 promotion to tenant_admin at once: it runs once."""
    acme_id = world.tenants["acme"].pk
    names = ["promo-target", "promo-0", "promo-1", "promo-2"]
    admin = world.users[("acme", Role.TENANT_ADMIN)]

    def principal(user: User, role: str) -> Principal:
        return Principal(
            kind="user",
            id=user.pk,
            label=user.username,
            roles=frozenset({role}),
            tenant_id=acme_id,
            user_id=user.pk,
        )

    def setup() -> str:
        acme = Tenant.objects.get(pk=acme_id)
        for name in names:
            user = tenants.user_create(username=name, password=PASSWORD)
            role = Role.AUDITOR if name == names[0] else Role.KEY_ADMIN
            tenants.membership_set(tenant=acme, user=user, roles=[role])
        target = Membership.objects.get(user__username=names[0], tenant=acme)
        with tenant_context(acme):
            return str(
                services.request_create(
                    principal=principal(admin, Role.TENANT_ADMIN),
                    action="member.role_change",
                    target=str(target.pk),
                    params={"roles": ["tenant_admin"]},
                    required=2,
                    approver_role=Role.KEY_ADMIN,
                    expiry_days=7,
                ).pk
            )

    def approve(request_id: str, name: str) -> str:
        with tenant_context(Tenant.objects.get(pk=acme_id)):
            try:
                return services.request_approve(
                    request_id=request_id,
                    principal=principal(User.objects.get(username=name), Role.KEY_ADMIN),
                ).state
            except KcmError as exc:
                return exc.code

    (request_id,) = _in_threads(setup)
    assert isinstance(request_id, str), request_id
    try:
        outcomes = _in_threads(*[lambda n=name: approve(request_id, n) for name in names[1:]])
        assert sorted(outcomes) == ["EXECUTED", "PENDING", "approval_not_pending"], outcomes

        def check() -> tuple[list[str], int, bool]:
            with tenant_context(Tenant.objects.get(pk=acme_id)):
                seal_here()
                return (
                    Membership.objects.get(user__username=names[0]).roles,
                    AuditEvent.objects.filter(
                        action="member.role_change", target=names[0], outcome="success"
                    ).count(),
                    audit.audit_verify()["ok"],
                )

        (checked,) = _in_threads(check)
        assert checked == (["tenant_admin"], 1, True), checked
    finally:

        def cleanup() -> None:
            with tenant_context(Tenant.objects.get(pk=acme_id)):
                ApprovalRequest.objects.filter(pk=request_id).delete()
            Membership.objects.filter(user__username__in=names).delete()
            User.objects.filter(username__in=names).delete()

        _in_threads(cleanup)
