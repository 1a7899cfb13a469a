"""Successes: one scenario per audited action, each returning (response, schema, preparation)
where preparation names an event the scenario writes first that is not under test."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.test import override_settings

from apps.core.roles import Role
from tests.audit.coveragekit import CTX

Scenario = Callable[[Any, dict[str, Any]], tuple[Any, str, str]]  # (response, schema, action)


def _chain(api: Any) -> dict[str, Any]:
    admin = api("acme", Role.KEY_ADMIN)
    l1 = admin.post("/api/v1/customer-keys/", {"name": "root"}).json_body
    l3 = admin.post("/api/v1/service-keys/", {"name": "payments"}).json_body
    user = api("acme", Role.KEY_USER)
    made = user.post("/api/v1/service-keys/payments/generate-data-key/", {"context": CTX}).json_body
    sealed = user.post(
        "/api/v1/service-keys/payments/encrypt/",
        {"plaintext": base64.b64encode(b"x").decode(), "context": CTX},
    ).json_body
    return {
        "l1": l1,
        "l3": l3,
        "admin": admin,
        "user": user,
        "dk": made["ciphertext"],
        "ct": sealed["ciphertext"],
    }


def _crypto(op: str, batch: bool = False) -> Scenario:
    def run(api: Any, c: dict[str, Any]) -> tuple[Any, str, str]:
        item: dict[str, Any] = {"context": CTX}
        if op in ("decrypt-data-key", "rewrap"):
            item["ciphertext"] = c["dk"]
        elif op == "decrypt":
            item["ciphertext"] = c["ct"]
        elif op == "encrypt":
            item["plaintext"] = "eA=="
        path = f"/api/v1/service-keys/payments/{op}/" + ("batch/" if batch else "")
        body = {"items": [item, item]} if batch else item
        return c["user"].post(path, body), "t_acme", ""

    return run


def _key_action(action: str, body: dict[str, Any] | None = None, level: str = "l3") -> Scenario:
    def run(api: Any, c: dict[str, Any]) -> tuple[Any, str, str]:
        key_id = c[level]["id"]
        prep = ""
        if action == "cancel-deletion":
            c["admin"].post(f"/api/v1/keys/{key_id}/schedule-deletion/", {"pending_days": 7})
            prep = "key.schedule_deletion"
        return c["admin"].post(f"/api/v1/keys/{key_id}/{action}/", body or {}), "t_acme", prep

    return run


def _version_action(action: str) -> Scenario:
    """Schedule (or cancel) the deletion of L1 version 1, retired by a rotation and its rewrap
    run here first (preparation, unaudited)."""

    def run(api: Any, c: dict[str, Any]) -> tuple[Any, str, str]:
        from django_tenants.utils import tenant_context

        from apps.rotation import runner
        from apps.tenants.models import Tenant

        key_id = c["l1"]["id"]
        url = f"/api/v1/keys/{key_id}/versions/1/"
        with override_settings(KCM_AUDIT_ENABLED=False):
            job = c["admin"].post(f"/api/v1/rotation/keys/{key_id}/rotate/", {}).json_body["job"]
            with tenant_context(Tenant.objects.get(slug="acme")):
                runner.rewrap_job_run(job_id=job["id"])
            if action == "cancel-deletion":
                c["admin"].post(url + "schedule-deletion/", {"pending_days": 7})
        body = {"pending_days": 7} if action == "schedule-deletion" else {}
        return c["admin"].post(url + f"{action}/", body), "t_acme", ""

    return run


def _customer_controlled_scenarios() -> dict[str, tuple[str, Scenario]]:
    """BYOK and HYOK (tests/keychain/test_byok_*.py and test_hyok_*.py test them in depth)."""
    from tests.keychain.byokkit import customer_wrap

    @override_settings(KCM_AUDIT_ENABLED=False)  # preparation, not under test
    def byok_key(c: dict[str, Any], imported: bool = False) -> str:
        key_id = str(
            c["admin"].post("/api/v1/customer-keys/byok/", {"name": "byok"}).json_body["id"]
        )
        if imported:
            params = (
                c["admin"]
                .post(
                    f"/api/v1/keys/{key_id}/import-parameters/",
                    {"algorithm": "RSAES_OAEP_SHA_1", "wrapping_key_bits": 2048},
                )
                .json_body
            )
            wrapped = customer_wrap(params["public_key_pem"], "RSAES_OAEP_SHA_1", bytes(range(32)))
            c["admin"].post(
                f"/api/v1/keys/{key_id}/import/",
                {
                    "import_token": params["import_token"],
                    "wrapped_material": base64.b64encode(wrapped).decode(),
                },
            )
        return key_id

    def import_(api: Any, c: dict[str, Any]) -> tuple[Any, str, str]:
        key_id = byok_key(c)
        with override_settings(KCM_AUDIT_ENABLED=False):
            params = (
                c["admin"]
                .post(
                    f"/api/v1/keys/{key_id}/import-parameters/",
                    {"algorithm": "RSAES_OAEP_SHA_1", "wrapping_key_bits": 2048},
                )
                .json_body
            )
        wrapped = customer_wrap(params["public_key_pem"], "RSAES_OAEP_SHA_1", bytes(32))
        return (
            c["admin"].post(
                f"/api/v1/keys/{key_id}/import/",
                {
                    "import_token": params["import_token"],
                    "wrapped_material": base64.b64encode(wrapped).decode(),
                },
            ),
            "t_acme",
            "",
        )

    def sync(api: Any, c: dict[str, Any]) -> tuple[Any, str, str]:
        # A customer's own token (KCM refuses the platform's token as a key manager).
        from tests.keychain.test_hyok_pkcs11 import CustomerToken

        token = CustomerToken()
        try:
            with override_settings(KCM_AUDIT_ENABLED=False):
                label = token.create_key(f"audit-external-{uuid.uuid4().hex[:8]}")
                manager = c["admin"].post(
                    "/api/v1/key-managers/",
                    {
                        "name": "own",
                        "kind": "pkcs11",
                        "settings": {"library": token.library, "token_label": token.label},
                        "credentials": {"pin": token.pin},
                    },
                )
                l1 = (
                    c["admin"]
                    .post(
                        "/api/v1/customer-keys/hyok/",
                        {
                            "name": "held",
                            "key_manager_id": manager.json_body["id"],
                            "external_key_id": label,
                        },
                    )
                    .json_body
                )
            return c["admin"].post(f"/api/v1/keys/{l1['id']}/sync/", {}), "t_acme", ""
        finally:
            token.delete()

    def manager_delete(api: Any, c: dict[str, Any]) -> tuple[Any, str, str]:
        with override_settings(KCM_AUDIT_ENABLED=False):  # preparation, not under test
            made = c["admin"].post("/api/v1/key-managers/", {"name": "gone", "kind": "pkcs11", "settings": {"library": settings.KCM_PKCS11_LIBRARY, "token_label": "customer"}, "credentials": {"pin": "1234"}})  # fmt: skip
        return (
            c["admin"].call("DELETE", f"/api/v1/key-managers/{made.json_body['id']}/"),
            "t_acme",
            "",
        )

    return {
        "byok create": ("key.create", lambda api, c: (c["admin"].post("/api/v1/customer-keys/byok/", {"name": "b"}), "t_acme", "")),
        "import parameters": ("key.import_parameters", lambda api, c: (c["admin"].post(f"/api/v1/keys/{byok_key(c)}/import-parameters/", {"algorithm": "RSAES_OAEP_SHA_1", "wrapping_key_bits": 2048}), "t_acme", "")),
        "import": ("key.import", import_),
        "delete imported material": ("key.import_delete", lambda api, c: (c["admin"].post(f"/api/v1/keys/{byok_key(c, imported=True)}/delete-imported-material/", {}), "t_acme", "")),
        "key manager create": ("key_manager.create", lambda api, c: (c["admin"].post("/api/v1/key-managers/", {"name": "m", "kind": "pkcs11", "settings": {"library": settings.KCM_PKCS11_LIBRARY, "token_label": "customer"}, "credentials": {"pin": "1234"}}), "t_acme", "")),
        "hyok sync": ("key.sync", sync),
        "key manager delete": ("key_manager.delete", manager_delete),
    }  # fmt: skip


def _rotation_job(action: str) -> Scenario:
    """Cancel or resume a rewrap job; starting (and cancelling) it is preparation, unaudited."""

    def run(api: Any, c: dict[str, Any]) -> tuple[Any, str, str]:
        from django.test import override_settings

        l2_id = c["l1"]["tenant_key"]["id"]
        with override_settings(KCM_AUDIT_ENABLED=False):
            job = c["admin"].post(f"/api/v1/rotation/keys/{l2_id}/rotate/", {}).json_body["job"]
            if action == "resume":
                c["admin"].post(f"/api/v1/rotation/jobs/{job['id']}/cancel/", {})
        return c["admin"].post(f"/api/v1/rotation/jobs/{job['id']}/{action}/", {}), "t_acme", ""

    return run


_SINK = {"kind": "syslog", "host": "127.0.0.1", "port": 6514}
_POLICY = {"actions": ["key.disable"], "required": 2}


def _approval(action: str) -> Scenario:
    """A pending 2-of-N request to disable the L1 (made with auditing off), then `action` on
    it: approve (one of two, so nothing runs yet), deny, or withdraw (by the requester)."""

    def run(api: Any, c: dict[str, Any]) -> tuple[Any, str, str]:
        from django.test import Client

        from apps.tenants import services
        from tests.helpers import Api

        with override_settings(KCM_AUDIT_ENABLED=False):
            approvers = []
            for n in range(2):
                user = services.user_create(username=f"approver-{n}", password="x" * 20 + "A1!")
                services.membership_set(tenant=_tenant("acme"), user=user, roles=[Role.KEY_ADMIN])
                client = Client(HTTP_HOST="acme.localhost")
                client.force_login(user)
                approvers.append(Api("acme.localhost", client=client))
            api("acme", Role.TENANT_ADMIN).call("PUT", "/api/v1/approvals/policy/", _POLICY)
            asked = c["admin"].post(f"/api/v1/keys/{c['l1']['id']}/disable/", {}).json_body
        path = f"/api/v1/approvals/{asked['id']}/{action}/"
        if action == "withdraw":
            return c["admin"].post(path, {}), "t_acme", ""
        body = {"reason": "not now"} if action == "deny" else {}
        return approvers[0].post(path, body), "t_acme", ""

    return run


def _approval_execute(api: Any, c: dict[str, Any]) -> tuple[Any, str, str]:
    """A 1-of-N request to disable the L1 that FAILED when approved (the key was scheduled for
    deletion), the key put right: the requester runs it again (its key.disable aside)."""
    from django.test import Client

    from apps.tenants import services
    from tests.helpers import Api

    key = f"/api/v1/keys/{c['l1']['id']}/"
    with override_settings(KCM_AUDIT_ENABLED=False):
        user = services.user_create(username="approver-0", password="x" * 20 + "A1!")
        services.membership_set(tenant=_tenant("acme"), user=user, roles=[Role.KEY_ADMIN])
        client = Client(HTTP_HOST="acme.localhost")
        client.force_login(user)
        policy = {"actions": ["key.disable"], "required": 1}
        api("acme", Role.TENANT_ADMIN).call("PUT", "/api/v1/approvals/policy/", policy)
        asked = c["admin"].post(key + "disable/", {}).json_body
        c["admin"].post(key + "schedule-deletion/", {"pending_days": 7})
        Api("acme.localhost", client=client).post(f"/api/v1/approvals/{asked['id']}/approve/", {})
        c["admin"].post(key + "cancel-deletion/", {})
        c["admin"].post(key + "enable/", {})
    return c["admin"].post(f"/api/v1/approvals/{asked['id']}/execute/", {}), "t_acme", "key.disable"


def _tenant(slug: str) -> Any:
    from apps.tenants.models import Tenant

    return Tenant.objects.get(slug=slug)


SUCCESS: dict[str, tuple[str, Scenario]] = {
    "customer-keys POST": ("key.create", lambda api, c: (c["admin"].post("/api/v1/customer-keys/", {"name": "second"}), "t_acme", "")),
    "service-keys POST": ("key.create", lambda api, c: (c["admin"].post("/api/v1/service-keys/", {"name": "ledger", "customer_key_id": c["l1"]["id"]}), "t_acme", "")),
    "key rotate": ("key.rotate", _key_action("rotate")),
    "key disable": ("key.disable", _key_action("disable", level="l1")),
    "key enable": ("key.enable", _key_action("enable")),
    "key schedule-deletion": ("key.schedule_deletion", _key_action("schedule-deletion", {"pending_days": 7})),
    "key cancel-deletion": ("key.cancel_deletion", _key_action("cancel-deletion")),
    "key version schedule-deletion": ("key.version.schedule_deletion", _version_action("schedule-deletion")),
    "key version cancel-deletion": ("key.version.cancel_deletion", _version_action("cancel-deletion")),
    **{f"{op}": (action, _crypto(op)) for op, action in (
        ("generate-data-key", "datakey.generate"), ("decrypt-data-key", "datakey.decrypt"),
        ("encrypt", "data.encrypt"), ("decrypt", "data.decrypt"), ("rewrap", "data.rewrap"))},
    **{f"{op} batch": (action + ".batch", _crypto(op, batch=True)) for op, action in (
        ("generate-data-key", "datakey.generate"), ("decrypt-data-key", "datakey.decrypt"),
        ("encrypt", "data.encrypt"), ("decrypt", "data.decrypt"), ("rewrap", "data.rewrap"))},
    "tokens POST": ("token.create", lambda api, c: (api("acme", Role.TENANT_ADMIN).post("/api/v1/tokens/", {"name": "n", "role": "tenant_admin"}), "t_acme", "")),
    "tokens DELETE": ("token.revoke", lambda api, c: (api("acme", Role.TENANT_ADMIN).call("DELETE", f"/api/v1/tokens/{api('acme', Role.TENANT_ADMIN).post('/api/v1/tokens/', {'name': 'n', 'role': 'tenant_admin'}).json_body['id']}/"), "t_acme", "token.create")),
    "invitations POST": ("invitation.create", lambda api, c: (api("acme", Role.TENANT_ADMIN).post("/api/v1/invitations/", {"roles": ["tenant_admin"]}), "t_acme", "")),
    "invitations DELETE": ("invitation.revoke", lambda api, c: (api("acme", Role.TENANT_ADMIN).call("DELETE", f"/api/v1/invitations/{api('acme', Role.TENANT_ADMIN).post('/api/v1/invitations/', {'roles': ['tenant_admin']}).json_body['id']}/"), "t_acme", "invitation.create")),
    "members PATCH": ("member.role_change", lambda api, c: (api("acme", Role.TENANT_ADMIN).call("PATCH", f"/api/v1/members/{_membership('acme-auditor')}/", {"roles": ["auditor", "tenant_admin"]}), "t_acme", "")),
    "members DELETE": ("member.remove", lambda api, c: (api("acme", Role.TENANT_ADMIN).call("DELETE", f"/api/v1/members/{_membership('acme-auditor')}/"), "t_acme", "")),
    "audit export": ("audit.export", lambda api, c: (api("acme", Role.AUDITOR).post("/api/v1/audit/exports/", {"format": "jsonl"}), "t_acme", "")),
    "audit sinks POST": ("audit.sink.create", lambda api, c: (api("acme", Role.TENANT_ADMIN).post("/api/v1/audit/sinks/", _SINK), "t_acme", "")),
    "audit sinks DELETE": ("audit.sink.delete", lambda api, c: (api("acme", Role.TENANT_ADMIN).call("DELETE", f"/api/v1/audit/sinks/{api('acme', Role.TENANT_ADMIN).post('/api/v1/audit/sinks/', _SINK).json_body['id']}/"), "t_acme", "audit.sink.create")),
    "tenant create": ("tenant.create", lambda api, c: (api("platform", Role.PLATFORM_OPERATOR).post("/api/v1/platform/tenants/", {"slug": "newco"}), "public", "")),
    "tenant suspend": ("tenant.suspend", lambda api, c: (api("platform", Role.PLATFORM_OPERATOR).post("/api/v1/platform/tenants/globex/suspend/", {}), "public", "")),
    "tenant resume": ("tenant.resume", lambda api, c: (api("platform", Role.PLATFORM_OPERATOR).post("/api/v1/platform/tenants/globex/resume/", {}), "public", "tenant.suspend")),
    "tenant terminate": ("tenant.terminate", lambda api, c: (api("platform", Role.PLATFORM_OPERATOR).post("/api/v1/platform/tenants/globex/terminate/", {}), "public", "")),
    "rotation rotate": ("key.rotate", lambda api, c: (c["admin"].post(f"/api/v1/rotation/keys/{c['l3']['id']}/rotate/", {}), "t_acme", "")),
    "rotation policy PUT": ("rotation.policy.set", lambda api, c: (c["admin"].call("PUT", f"/api/v1/rotation/keys/{c['l3']['id']}/policy/", {"period_days": 90}), "t_acme", "")),
    "rotation policy DELETE": ("rotation.policy.clear", lambda api, c: (c["admin"].call("DELETE", f"/api/v1/rotation/keys/{c['l3']['id']}/policy/"), "t_acme", "")),
    "rotation defaults PUT": ("rotation.policy.set", lambda api, c: (c["admin"].call("PUT", "/api/v1/rotation/defaults/", {"level": "L3", "period_days": 30}), "t_acme", "")),
    "rotation rewrap": ("rotation.job.start", lambda api, c: (c["admin"].post(f"/api/v1/rotation/keys/{c['l1']['id']}/rewrap/", {}), "t_acme", "")),
    "rotation job cancel": ("rotation.job.cancel", _rotation_job("cancel")),
    "rotation job resume": ("rotation.job.resume", _rotation_job("resume")),
    "platform rotation": ("rotation.platform.start", lambda api, c: (api("platform", Role.PLATFORM_OPERATOR).post("/api/v1/platform/rotations/", {"level": "L2"}), "public", "")),
    "approvals policy PUT": ("approval.policy.set", lambda api, c: (api("acme", Role.TENANT_ADMIN).call("PUT", "/api/v1/approvals/policy/", {"actions": ["key.disable"], "required": 1}), "t_acme", "")),
    "approval approve": ("approval.approve", _approval("approve")),
    "approval deny": ("approval.deny", _approval("deny")),
    "approval withdraw": ("approval.withdraw", _approval("withdraw")),
    "approval execute": ("approval.execute", _approval_execute),
    "sso PUT": ("sso.update", lambda api, c: (_sso_put(api), "t_acme", "")),
    "sso DELETE": ("sso.remove", lambda api, c: (_sso_put(api) and api("acme", Role.TENANT_ADMIN).call("DELETE", "/api/v1/sso/"), "t_acme", "sso.update")),
    "mfa policy PUT": ("mfa.policy_set", lambda api, c: (api("acme", Role.TENANT_ADMIN).call("PUT", "/api/v1/mfa/policy/", {"require_for_admins": True}), "t_acme", "")),
    **_customer_controlled_scenarios(),
}  # fmt: skip


def _sso_put(api: Any) -> Any:
    """Configure acme's single sign-on against a provider that answers discovery."""
    from tests.sso.idpkit import CLIENT_ID, CLIENT_SECRET, running_idp

    with running_idp() as idp:
        body = {
            "name": "IdP",
            "issuer": idp.issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "role_map": {"admins": ["tenant_admin"]},
            "allowed_domains": ["example.com"],
        }
        return api("acme", Role.TENANT_ADMIN).call("PUT", "/api/v1/sso/", body)


def _membership(username: str) -> int:
    from apps.tenants.models import Membership

    return Membership.objects.get(user__username=username, tenant__slug="acme").pk
