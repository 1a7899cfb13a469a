"""Attacks on multi-factor sign-in (issue 12): the password alone does not sign in a person
with a second factor; wrong, replayed and guessed codes are refused (and lock); the second
step cannot be skipped or finished on another tenant; nobody removes another person's factor;
approving needs a fresh factor (console and API); seeds are sealed and recovery codes hashed;
a key admin whose tenant requires MFA reaches nothing but enrolment until enrolling."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django_tenants.utils import schema_context

from apps.audit.models import AuditEvent
from apps.audit.sealer import seal_here
from apps.core.errors import KcmError
from apps.core.roles import Role
from apps.mfa import services
from apps.mfa.models import MfaDevice, RecoveryCode
from apps.tenants import services as tenants
from tests.conftest import PASSWORD, World
from tests.helpers import Api, assert_problem
from tests.mfa.kit import enrol_totp, next_code, password_step

HOST = "acme.localhost"


@pytest.fixture(autouse=True)
def _fresh_counts() -> Iterator[None]:
    cache.clear()  # django-axes' counts
    yield
    cache.clear()


def _events(action: str) -> list[AuditEvent]:
    with schema_context("t_acme"):
        seal_here()  # failures are recorded unchained (pending) first
        return list(AuditEvent.objects.filter(action=action).order_by("seq"))


def _signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_the_password_alone_does_not_sign_in_a_person_with_a_factor(world: World) -> None:
    user = world.users[("acme", Role.KEY_ADMIN)]
    enrol_totp(user)
    client, response = password_step(user, HOST)
    assert response.status_code == 302 and response["Location"] == "/mfa/verify/"
    assert not _signed_in(client)
    # Skipping the second step: every page still asks for sign-in.
    for path in ("/", "/keys/", "/mfa/", "/mfa/step-up/", "/approvals/"):
        response = client.get(path, HTTP_HOST=HOST)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), path
    response = Api(HOST, client=client).get("/api/v1/me/")
    assert response.status_code == 401


def test_a_wrong_code_is_refused_and_audited_without_the_code(world: World) -> None:
    user = world.users[("acme", Role.KEY_ADMIN)]
    seed = enrol_totp(user)
    client, _ = password_step(user, HOST)
    right = next_code(seed)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    response = client.post("/mfa/verify/", {"code": wrong}, HTTP_HOST=HOST)
    assert response.status_code == 403
    assert b"That code is not right" in response.content
    assert not _signed_in(client)
    failed = _events("mfa.verify_failed")
    assert failed and failed[-1].outcome == "denied"
    assert failed[-1].actor == "user:acme-key_admin"
    assert wrong not in str(failed[-1].details)
    odd = client.post("/mfa/verify/", {"code": "١٢٣٤٥٦"}, HTTP_HOST=HOST)  # not ASCII digits
    assert odd.status_code == 403
    response = client.post("/mfa/verify/", {"code": right}, HTTP_HOST=HOST)
    assert response.status_code == 302 and response["Location"] == "/"
    assert _signed_in(client)
    assert _events("auth.login")[-1].details["second_factor"] == "totp"
    assert client.get("/keys/", HTTP_HOST=HOST).status_code == 200


def test_a_code_passes_once(world: World) -> None:
    user = world.users[("acme", Role.KEY_ADMIN)]
    seed = enrol_totp(user)
    code = next_code(seed)
    first, _ = password_step(user, HOST)
    assert first.post("/mfa/verify/", {"code": code}, HTTP_HOST=HOST).status_code == 302
    replay, _ = password_step(user, HOST)
    response = replay.post("/mfa/verify/", {"code": code}, HTTP_HOST=HOST)
    assert response.status_code == 403
    assert not _signed_in(replay)


def test_guessing_codes_locks_the_second_factor_even_for_the_right_code(world: World) -> None:
    user = world.users[("acme", Role.KEY_ADMIN)]
    seed = enrol_totp(user)
    for attempt in range(services.FAILURE_LIMIT):
        client, _ = password_step(user, HOST)
        response = client.post("/mfa/verify/", {"code": "000000"}, HTTP_HOST=HOST)
        assert response.status_code == 403, attempt
    client, _ = password_step(user, HOST)
    response = client.post("/mfa/verify/", {"code": next_code(seed)}, HTTP_HOST=HOST)
    assert response.status_code == 429
    assert b"Too many wrong codes" in response.content
    assert not _signed_in(client)


def test_a_pending_sign_in_is_dropped_after_a_few_wrong_codes(world: World) -> None:
    user = world.users[("acme", Role.KEY_ADMIN)]
    enrol_totp(user)
    client, _ = password_step(user, HOST)
    for _ in range(4):
        assert client.post("/mfa/verify/", {"code": "12"}, HTTP_HOST=HOST).status_code == 403
    response = client.post("/mfa/verify/", {"code": "12"}, HTTP_HOST=HOST)
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert client.get("/mfa/verify/", HTTP_HOST=HOST)["Location"] == "/login/"


def test_a_recovery_code_signs_in_once(world: World) -> None:
    user = world.users[("acme", Role.TENANT_ADMIN)]
    enrol_totp(user)
    codes = services.recovery_codes_regenerate(user_id=user.pk)
    client, _ = password_step(user, HOST)
    response = client.post("/mfa/verify/", {"code": codes[0].upper()}, HTTP_HOST=HOST)
    assert response.status_code == 302 and _signed_in(client)
    assert _events("mfa.recovery_code_used")[-1].details["left"] == len(codes) - 1
    again, _ = password_step(user, HOST)
    assert again.post("/mfa/verify/", {"code": codes[0]}, HTTP_HOST=HOST).status_code == 403
    assert not _signed_in(again)


def test_a_pending_sign_in_cannot_be_finished_on_another_tenant(world: World) -> None:
    user = world.users[("acme", Role.KEY_ADMIN)]
    seed = enrol_totp(user)
    client, _ = password_step(user, HOST)
    # The same browser session presented on another tenant's host.
    response = client.post("/mfa/verify/", {"code": next_code(seed)}, HTTP_HOST="globex.localhost")
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert not _signed_in(client)


def test_seeds_are_sealed_and_recovery_codes_hashed(world: World) -> None:
    user = world.users[("acme", Role.AUDITOR)]
    seed = enrol_totp(user)
    codes = services.recovery_codes_regenerate(user_id=user.pk)
    sealed = bytes(MfaDevice.objects.get(user=user).secret_sealed or b"")
    assert seed.encode() not in sealed
    digests = set(RecoveryCode.objects.filter(user=user).values_list("digest", flat=True))
    assert len(digests) == len(codes)
    assert not any(code.replace("-", "") in d or code in d for code in codes for d in digests)


def test_nobody_removes_another_persons_factor(world: World) -> None:
    victim = world.users[("acme", Role.KEY_ADMIN)]
    enrol_totp(victim)
    device = MfaDevice.objects.get(user=victim)
    attacker = Client()
    attacker.force_login(world.users[("acme", Role.TENANT_ADMIN)])
    response = attacker.post(f"/mfa/devices/{device.uid}/remove/", HTTP_HOST=HOST, follow=True)
    assert b"No such device" in response.content
    assert MfaDevice.objects.filter(pk=device.pk).exists()


def test_removing_ones_own_factor_needs_a_fresh_factor(world: World) -> None:
    user = world.users[("acme", Role.KEY_ADMIN)]
    seed = enrol_totp(user)
    device = MfaDevice.objects.get(user=user)
    client = Client()
    client.force_login(user)  # a session whose factor is not fresh
    response = client.post(f"/mfa/devices/{device.uid}/remove/", HTTP_HOST=HOST)
    assert response.status_code == 302 and response["Location"].startswith("/mfa/step-up/")
    assert MfaDevice.objects.filter(pk=device.pk).exists()
    client.post("/mfa/step-up/", {"code": next_code(seed), "next": "/mfa/"}, HTTP_HOST=HOST)
    response = client.post(f"/mfa/devices/{device.uid}/remove/", HTTP_HOST=HOST)
    assert response.status_code == 302 and response["Location"] == "/mfa/"
    assert not MfaDevice.objects.filter(pk=device.pk).exists()
    assert _events("mfa.removed")


# --- step-up before approving ---------------------------------------------------------------


def test_approving_in_the_console_needs_a_fresh_factor(world: World) -> None:
    user = world.users[("acme", Role.KEY_ADMIN)]
    seed = enrol_totp(user)
    client = Client()
    client.force_login(user)
    decide = f"/approvals/{uuid4()}/approve/"
    response = client.post(decide, HTTP_HOST=HOST)
    assert response.status_code == 302
    assert response["Location"] == "/mfa/step-up/?next=%2Fapprovals%2F"
    page = client.post("/mfa/step-up/", {"code": "000000", "next": "/approvals/"}, HTTP_HOST=HOST)
    assert page.status_code == 403  # wrong code: still not fresh
    assert client.post(decide, HTTP_HOST=HOST)["Location"].startswith("/mfa/step-up/")
    response = client.post(
        "/mfa/step-up/", {"code": next_code(seed), "next": "/approvals/"}, HTTP_HOST=HOST
    )
    assert response["Location"] == "/approvals/"
    assert _events("mfa.step_up")
    # Now the decision reaches the approvals service (which finds no such request).
    response = client.post(decide, HTTP_HOST=HOST, follow=True)
    assert response.redirect_chain[-1][0] == "/approvals/"
    assert b"step-up" not in response.redirect_chain[-1][0].encode()


def test_denying_through_the_api_needs_a_current_code(world: World, api: Any) -> None:
    user = world.users[("acme", Role.KEY_ADMIN)]
    seed = enrol_totp(user)
    client = api("acme", Role.KEY_ADMIN)  # the token of that person
    path = f"/api/v1/approvals/{uuid4()}/deny/"
    assert_problem(client.post(path, {"reason": "no"}), 403, "mfa_step_up_required")
    assert_problem(
        client.post(path, {"reason": "no"}, x_kcm_mfa_code="000000"), 403, "mfa_invalid_code"
    )
    response = client.post(path, {"reason": "no"}, x_kcm_mfa_code=next_code(seed))
    assert_problem(response, 404, response.json_body["code"])  # past the step-up: no request


def test_the_tenant_requirement_makes_step_up_apply_without_a_factor(
    world: World, api: Any
) -> None:
    services.policy_set(tenant_id=world.tenants["acme"].pk, require_for_admins=True)
    response = api("acme", Role.TENANT_ADMIN).post(f"/api/v1/approvals/{uuid4()}/approve/", {})
    assert_problem(response, 403, "mfa_step_up_required")


# --- the tenant's requirement ---------------------------------------------------------------


def test_a_key_admin_without_a_factor_reaches_only_enrolment(world: World) -> None:
    services.policy_set(tenant_id=world.tenants["acme"].pk, require_for_admins=True)
    admin = world.users[("acme", Role.KEY_ADMIN)]
    client = Client()
    client.force_login(admin)
    for path in ("/", "/keys/", "/approvals/", "/tokens/", "/audit/"):
        response = client.get(path, HTTP_HOST=HOST)
        assert response.status_code == 302 and response["Location"] == "/mfa/", path
    assert client.get("/mfa/", HTTP_HOST=HOST).status_code == 200
    assert_problem(Api(HOST, client=client).get("/api/v1/keys/"), 403, "mfa_enrolment_required")
    # Key users and auditors are not covered by the setting.
    reader = Client()
    reader.force_login(world.users[("acme", Role.AUDITOR)])
    assert reader.get("/audit/", HTTP_HOST=HOST).status_code == 200
    # Once enrolled, the pages open.
    enrol_totp(admin)
    assert client.get("/keys/", HTTP_HOST=HOST).status_code == 200


def test_operators_must_enrol_when_the_platform_says_so(world: World, settings: Any) -> None:
    settings.KCM_PLATFORM_REQUIRE_MFA = True
    client = Client()
    client.force_login(world.users[("platform", Role.PLATFORM_OPERATOR)])
    response = client.get("/tenants/", HTTP_HOST="localhost")
    assert response.status_code == 302 and response["Location"] == "/mfa/"


def test_the_mfa_setting_through_the_api(world: World, api: Any) -> None:
    admin = api("acme", Role.TENANT_ADMIN)
    assert admin.get("/api/v1/mfa/policy/").json_body == {"require_for_admins": False}
    response = admin.call("PUT", "/api/v1/mfa/policy/", {"require_for_admins": True})
    assert response.status_code == 200 and response.json_body == {"require_for_admins": True}
    assert services.policy_requires(world.tenants["acme"].pk)
    assert _events("mfa.policy_set")
    bad = admin.call("PUT", "/api/v1/mfa/policy/", {"require_for_admins": "sometimes"})
    assert bad.status_code == 400 and bad["Content-Type"] == "application/problem+json"
    key_admin = api("acme", Role.KEY_ADMIN)
    refused = key_admin.call("PUT", "/api/v1/mfa/policy/", {"require_for_admins": False})
    assert_problem(refused, 403, "role_not_allowed")
    # globex is not affected.
    assert not services.policy_requires(world.tenants["globex"].pk)


def test_lifting_the_requirement_needs_a_fresh_factor(world: World, api: Any) -> None:
    services.policy_set(tenant_id=world.tenants["acme"].pk, require_for_admins=True)
    admin_user = world.users[("acme", Role.TENANT_ADMIN)]
    seed = enrol_totp(admin_user)
    admin = api("acme", Role.TENANT_ADMIN)
    off = {"require_for_admins": False}
    assert_problem(admin.call("PUT", "/api/v1/mfa/policy/", off), 403, "mfa_step_up_required")
    assert services.policy_requires(world.tenants["acme"].pk)
    console = Client()
    console.force_login(admin_user)
    response = console.post("/mfa/policy/", {}, HTTP_HOST=HOST)
    assert response["Location"].startswith("/mfa/step-up/")
    assert services.policy_requires(world.tenants["acme"].pk)
    response = admin.call("PUT", "/api/v1/mfa/policy/", off, x_kcm_mfa_code=next_code(seed))
    assert response.status_code == 200
    assert not services.policy_requires(world.tenants["acme"].pk)


def test_the_step_up_page_does_not_redirect_off_site(world: World) -> None:
    user = world.users[("acme", Role.KEY_ADMIN)]
    seed = enrol_totp(user)
    client = Client()
    client.force_login(user)
    response = client.post(
        "/mfa/step-up/",
        {"code": next_code(seed), "next": "https://evil.example/phish"},
        HTTP_HOST=HOST,
    )
    assert response.status_code == 302 and response["Location"] == "/"


def _in_thread(work: Any) -> tuple[threading.Thread, list[Any]]:
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(work())
        except BaseException as exc:  # reported by the caller
            box.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def test_one_code_sent_twice_at_once_passes_once(world: World) -> None:
    """Committed rows and separate connections: two requests race with the same code; the
    device row lock lets one pass and shows the other the used time step."""

    def setup() -> tuple[int, str]:
        user = tenants.user_create(username="mfa-racer", password=PASSWORD)
        return user.pk, enrol_totp(user)

    thread, box = _in_thread(setup)
    thread.join()
    user_id, seed = box[0]
    code = next_code(seed)
    start = threading.Barrier(2)

    def attempt() -> str:
        start.wait(5)
        try:
            return services.code_verify(user_id=user_id, code=code, purpose="sign_in")
        except KcmError as exc:
            return exc.code

    try:
        racers = [_in_thread(attempt) for _ in range(2)]
        for racer, _ in racers:
            racer.join()
        assert sorted(box[0] for _, box in racers) == ["mfa_invalid_code", "totp"]
    finally:
        thread, _ = _in_thread(lambda: User.objects.filter(pk=user_id).delete())
        thread.join()
