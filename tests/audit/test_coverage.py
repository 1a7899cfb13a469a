"""Every API endpoint and console action writes exactly the expected audit event(s),
including denied and failed requests (parametrised over the registered URL patterns)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings
from django_tenants.utils import schema_context

from apps.audit.models import AuditEvent
from apps.audit.sealer import seal_here
from apps.core.roles import TENANT_ROLES, Role
from tests.conftest import PASSWORD
from tests.urlmap import PUBLIC, Route, platform_routes, tenant_routes

CTX = {"order": "42"}


def _events(schema: str) -> list[AuditEvent]:
    with schema_context(schema):
        seal_here()  # requests commit their events as pending; search and verify seal first
        return list(AuditEvent.objects.order_by("seq"))


class Log:
    """Events appended to one schema's log since `mark()`."""

    def __init__(self, schema: str):
        self.schema = schema
        self.mark()

    def mark(self) -> None:
        self.start = len(_events(self.schema))

    def new(self) -> list[AuditEvent]:
        return _events(self.schema)[self.start :]


def expected_action(route: Route, method: str) -> str:
    view = route.view_class
    initkwargs = getattr(route.callback, "view_initkwargs", {})
    instance = view(**initkwargs)
    return instance.audit_actions.get(method, instance.audit_action) or "api.request"


def _wrong_role(route: Route, method: str, slug: str) -> str | None:
    view = route.view_class
    allowed = getattr(view, "method_roles", {}).get(method, view.allowed_roles)
    candidates = [Role.PLATFORM_OPERATOR] if slug == "platform" else list(TENANT_ROLES)
    return next((role for role in candidates if role not in allowed), None)


def _api_cases() -> list[Any]:
    cases = []
    for slug, routes in (("acme", tenant_routes()), ("platform", platform_routes())):
        for route in routes:
            if route.view_class is None or route.name in PUBLIC:
                continue
            for method in route.methods:
                cases.append(pytest.param(slug, route, method, id=f"{slug} {method} {route.path}"))
    return cases


@pytest.mark.parametrize(("slug", "route", "method"), _api_cases())
def test_a_denied_request_writes_one_denied_event(
    world: Any, api: Any, slug: str, route: Route, method: str
) -> None:
    schema = "public" if slug == "platform" else "t_acme"
    role = _wrong_role(route, method, slug)
    if role is None:
        # Every role may call it: an unauthenticated call is the denied one.
        client, role_label = api(slug), "anonymous"
    else:
        client, role_label = api(slug, role), role
    log = Log(schema)
    response = client.call(method, route.path, {} if method != "GET" else None)
    assert response.status_code in (401, 403)
    events = log.new()
    assert [(e.action, e.outcome) for e in events] == [(expected_action(route, method), "denied")]
    assert events[0].error_code == response.json_body["code"]
    if role_label != "anonymous":
        assert events[0].role == role_label


WRITES = [c for c in _api_cases() if c.values[2] in ("POST", "PATCH", "PUT")]


@pytest.mark.parametrize(("slug", "route", "method"), WRITES)
def test_a_failed_write_writes_one_error_event_and_nothing_else(
    world: Any, api: Any, slug: str, route: Route, method: str
) -> None:
    schema = "public" if slug == "platform" else "t_acme"
    view = route.view_class
    allowed = getattr(view, "method_roles", {}).get(method, view.allowed_roles)
    role = next(r for r in sorted(allowed) if (r == Role.PLATFORM_OPERATOR) == (slug == "platform"))
    log = Log(schema)
    response = api(slug, role).call(method, route.path, raw='{"broken": ')
    assert 400 <= response.status_code < 500
    events = log.new()
    assert [(e.action, e.outcome) for e in events] == [(expected_action(route, method), "error")]


@pytest.mark.parametrize(
    ("path", "role", "action", "code"),
    [
        ("/api/v1/tokens/999999/", Role.TENANT_ADMIN, "token.revoke", "token_not_found"),
        ("/api/v1/members/999999/", Role.TENANT_ADMIN, "member.remove", "member_not_found"),
    ],
)
def test_a_failed_delete_writes_one_error_event(
    world: Any, api: Any, path: str, role: str, action: str, code: str
) -> None:
    log = Log("t_acme")
    assert api("acme", role).call("DELETE", path).status_code == 404
    assert [(e.action, e.outcome, e.error_code) for e in log.new()] == [(action, "error", code)]


# --- successes: one scenario per audited action ----------------------------------------

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


def _customer_controlled_scenarios() -> dict[str, tuple[str, Scenario]]:
    """BYOK and HYOK (tests/keychain/test_byok.py and test_hyok_*.py test them in depth)."""
    from tests.keychain.test_byok import customer_wrap

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

    def own_token_manager(c: dict[str, Any]) -> str:
        """A PKCS#11 "customer" manager served by the platform's own token (for audit only)."""
        return str(
            c["admin"]
            .post(
                "/api/v1/key-managers/",
                {
                    "name": "own",
                    "kind": "pkcs11",
                    "settings": {
                        "library": settings.KCM_PKCS11_LIBRARY,
                        "token_label": settings.KCM_PKCS11_TOKEN_LABEL,
                    },
                    "credentials": {"pin": settings.KCM_PKCS11_PIN},
                },
            )
            .json_body["id"]
        )

    def sync(api: Any, c: dict[str, Any]) -> tuple[Any, str, str]:
        from apps.keystores.registry import platform_keystore

        with override_settings(KCM_AUDIT_ENABLED=False):
            label = f"audit-external-{uuid.uuid4().hex[:8]}"
            platform_keystore().create_root_key(label=label)
            l1 = (
                c["admin"]
                .post(
                    "/api/v1/customer-keys/hyok/",
                    {
                        "name": "held",
                        "key_manager_id": own_token_manager(c),
                        "external_key_id": label,
                    },
                )
                .json_body
            )
        return c["admin"].post(f"/api/v1/keys/{l1['id']}/sync/", {}), "t_acme", ""

    return {
        "byok create": ("key.create", lambda api, c: (c["admin"].post("/api/v1/customer-keys/byok/", {"name": "b"}), "t_acme", "")),
        "import parameters": ("key.import_parameters", lambda api, c: (c["admin"].post(f"/api/v1/keys/{byok_key(c)}/import-parameters/", {"algorithm": "RSAES_OAEP_SHA_1", "wrapping_key_bits": 2048}), "t_acme", "")),
        "import": ("key.import", import_),
        "delete imported material": ("key.import_delete", lambda api, c: (c["admin"].post(f"/api/v1/keys/{byok_key(c, imported=True)}/delete-imported-material/", {}), "t_acme", "")),
        "key manager create": ("key_manager.create", lambda api, c: (c["admin"].post("/api/v1/key-managers/", {"name": "m", "kind": "pkcs11", "settings": {"library": settings.KCM_PKCS11_LIBRARY, "token_label": "customer"}, "credentials": {"pin": "1234"}}), "t_acme", "")),
        "hyok sync": ("key.sync", sync),
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


SUCCESS: dict[str, tuple[str, Scenario]] = {
    "customer-keys POST": ("key.create", lambda api, c: (c["admin"].post("/api/v1/customer-keys/", {"name": "second"}), "t_acme", "")),
    "service-keys POST": ("key.create", lambda api, c: (c["admin"].post("/api/v1/service-keys/", {"name": "ledger", "customer_key_id": c["l1"]["id"]}), "t_acme", "")),
    "key rotate": ("key.rotate", _key_action("rotate")),
    "key disable": ("key.disable", _key_action("disable", level="l1")),
    "key enable": ("key.enable", _key_action("enable")),
    "key schedule-deletion": ("key.schedule_deletion", _key_action("schedule-deletion", {"pending_days": 7})),
    "key cancel-deletion": ("key.cancel_deletion", _key_action("cancel-deletion")),
    **{f"{op}": (action, _crypto(op)) for op, action in (
        ("generate-data-key", "datakey.generate"), ("decrypt-data-key", "datakey.decrypt"),
        ("encrypt", "data.encrypt"), ("decrypt", "data.decrypt"), ("rewrap", "data.rewrap"))},
    **{f"{op} batch": (action + ".batch", _crypto(op, batch=True)) for op, action in (
        ("generate-data-key", "datakey.generate"), ("decrypt-data-key", "datakey.decrypt"),
        ("encrypt", "data.encrypt"), ("decrypt", "data.decrypt"), ("rewrap", "data.rewrap"))},
    "tokens POST": ("token.create", lambda api, c: (api("acme", Role.TENANT_ADMIN).post("/api/v1/tokens/", {"name": "n", "role": "auditor"}), "t_acme", "")),
    "tokens DELETE": ("token.revoke", lambda api, c: (api("acme", Role.TENANT_ADMIN).call("DELETE", f"/api/v1/tokens/{api('acme', Role.TENANT_ADMIN).post('/api/v1/tokens/', {'name': 'n', 'role': 'auditor'}).json_body['id']}/"), "t_acme", "token.create")),
    "members POST": ("member.add", lambda api, c: (api("acme", Role.TENANT_ADMIN).post("/api/v1/members/", {"username": "globex-auditor", "role": "auditor"}), "t_acme", "")),
    "members PATCH": ("member.role_change", lambda api, c: (api("acme", Role.TENANT_ADMIN).call("PATCH", f"/api/v1/members/{_membership('acme-auditor')}/", {"role": "key_user"}), "t_acme", "")),
    "members DELETE": ("member.remove", lambda api, c: (api("acme", Role.TENANT_ADMIN).call("DELETE", f"/api/v1/members/{_membership('acme-auditor')}/"), "t_acme", "")),
    "audit export": ("audit.export", lambda api, c: (api("acme", Role.AUDITOR).post("/api/v1/audit/exports/", {"format": "jsonl"}), "t_acme", "")),
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
    **_customer_controlled_scenarios(),
}  # fmt: skip


def _membership(username: str) -> int:
    from apps.tenants.models import Membership

    return Membership.objects.get(user__username=username, tenant__slug="acme").pk


@pytest.mark.parametrize("name", list(SUCCESS))
def test_a_successful_action_writes_exactly_its_event(world: Any, api: Any, name: str) -> None:
    action, scenario = SUCCESS[name]
    context = _chain(api)
    logs = {"t_acme": Log("t_acme"), "public": Log("public")}
    if name == "tenant resume":
        api("platform", Role.PLATFORM_OPERATOR).post("/api/v1/platform/tenants/globex/suspend/", {})
        logs["public"].mark()
    response, schema, preparation = scenario(api, context)
    assert response.status_code < 300, response.content[:300]
    # A scenario may first prepare (e.g. create the token it then revokes): not under test.
    events = [e for e in logs[schema].new() if e.action != preparation]
    assert [(e.action, e.outcome) for e in events] == [(action, "success")]
    other = "public" if schema == "t_acme" else "t_acme"
    assert logs[other].new() == []


def test_crypto_events_name_the_key_version_and_context_but_no_key_material(
    world: Any, api: Any
) -> None:
    context = _chain(api)
    log = Log("t_acme")
    made = (
        context["user"]
        .post("/api/v1/service-keys/payments/generate-data-key/", {"context": CTX})
        .json_body
    )
    (event,) = log.new()
    assert event.target == "service_key:payments" and event.target_version == 1
    assert (
        event.details["context"] == CTX
        and event.actor.startswith("token:")
        and event.role == "key_user"
    )
    text = repr(event.__dict__)
    assert made["plaintext"] not in text and made["ciphertext"] not in text


def test_reads_write_nothing(world: Any, api: Any) -> None:
    _chain(api)
    log = Log("t_acme")
    api("acme", Role.KEY_ADMIN).get("/api/v1/keys/")
    api("acme", Role.AUDITOR).get("/api/v1/audit/events/")
    assert log.new() == []


# --- console ---------------------------------------------------------------------------


def test_console_sign_in_out_and_failures_are_audited(world: Any) -> None:
    log = Log("t_acme")
    client = Client()
    client.post(
        "/login/", {"username": "acme-auditor", "password": "wrong"}, HTTP_HOST="acme.localhost"
    )
    client.post(
        "/login/", {"username": "globex-auditor", "password": PASSWORD}, HTTP_HOST="acme.localhost"
    )
    client.post(
        "/login/", {"username": "acme-auditor", "password": PASSWORD}, HTTP_HOST="acme.localhost"
    )
    client.get("/members/", HTTP_HOST="acme.localhost")  # an auditor may not
    client.post("/logout/", HTTP_HOST="acme.localhost")
    assert [(e.action, e.outcome, e.error_code) for e in log.new()] == [
        ("auth.login_failed", "denied", "invalid_credentials"),
        ("auth.login_failed", "denied", "not_a_member"),
        ("auth.login", "success", ""),
        ("console.request", "denied", "role_not_allowed"),
        ("auth.logout", "success", ""),
    ]
    assert log.new()[2].actor == "user:acme-auditor"


def test_console_actions_write_the_same_events_as_the_api(world: Any) -> None:
    client = Client()
    client.force_login(world.users[("acme", Role.KEY_ADMIN)])
    log = Log("t_acme")
    client.post("/keys/customer-keys/new/", {"name": "root"}, HTTP_HOST="acme.localhost")
    client.post("/keys/service-keys/new/", {"name": "payments"}, HTTP_HOST="acme.localhost")
    client.post(
        "/keys/service-keys/new/", {"name": "payments"}, HTTP_HOST="acme.localhost"
    )  # exists: fails
    assert [(e.action, e.outcome, e.error_code) for e in log.new()] == [
        ("key.create", "success", ""),
        ("key.create", "success", ""),
        ("key.create", "error", "key_exists"),
    ]
    assert all(e.actor == "user:acme-key_admin" for e in log.new())


def test_every_audited_write_endpoint_has_a_success_scenario_here() -> None:
    covered = {action for action, _ in SUCCESS.values()}
    for case in _api_cases():
        _slug, route, method = case.values
        if method in ("POST", "PATCH", "PUT", "DELETE"):
            assert expected_action(route, method) in covered, (
                f"add a scenario for {method} {route.path}"
            )
