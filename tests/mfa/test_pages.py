"""The MFA console pages and passkey endpoints through Django's test client (the browser
flows are in tests/e2e/test_mfa_browser.py): enrolment refusals, recovery codes, passkey
options bound to the host, refusals of bad passkey answers, the step-up window."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pyotp
import pytest
from django.core.cache import cache
from django.test import Client

from apps.core.roles import Role
from apps.mfa import services
from apps.mfa.models import MfaDevice
from apps.mfa.signin import VERIFIED_AT
from tests.conftest import World
from tests.helpers import Api, assert_problem
from tests.mfa.kit import enrol_totp, next_code, password_step

HOST = "acme.localhost"


@pytest.fixture(autouse=True)
def _fresh_counts() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


def _signed_in_as(world: World, role: str, slug: str = "acme") -> Client:
    client = Client()
    client.force_login(world.users[(slug, role)])
    return client


def test_enrolling_an_app_from_the_console(world: World) -> None:
    client = _signed_in_as(world, Role.KEY_USER)
    response = client.post("/mfa/totp/", {"name": "phone"}, HTTP_HOST=HOST)
    assert response.status_code == 302
    page = client.get(response["Location"], HTTP_HOST=HOST)
    uri = page.context["uri"]
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP)
    assert uri.startswith("otpauth://totp/KCM:acme-key_user?")
    # A wrong first code does not enrol.
    wrong = client.post(response["Location"], {"code": "000000"}, HTTP_HOST=HOST)
    assert wrong.status_code == 403 and b"That code is not right" in wrong.content
    assert not services.has_factor(world.users[("acme", Role.KEY_USER)].pk)
    done = client.post(response["Location"], {"code": totp.now()}, HTTP_HOST=HOST)
    assert done.status_code == 200 and len(done.context["codes"]) == 10
    assert services.has_factor(world.users[("acme", Role.KEY_USER)].pk)
    # The seed is no longer shown once confirmed.
    again = client.get(response["Location"], HTTP_HOST=HOST, follow=True)
    assert b"No such enrolment" in again.content


def test_recovery_codes_need_a_factor_and_a_fresh_one(world: World) -> None:
    client = _signed_in_as(world, Role.AUDITOR)
    response = client.post("/mfa/recovery-codes/", HTTP_HOST=HOST, follow=True)
    assert b"Enrol a factor first" in response.content
    seed = enrol_totp(world.users[("acme", Role.AUDITOR)])
    stale = client.post("/mfa/recovery-codes/", HTTP_HOST=HOST)
    assert stale["Location"].startswith("/mfa/step-up/")
    client.post("/mfa/step-up/", {"code": next_code(seed), "next": "/mfa/"}, HTTP_HOST=HOST)
    fresh = client.post("/mfa/recovery-codes/", HTTP_HOST=HOST)
    assert fresh.status_code == 200 and len(fresh.context["codes"]) == 10


def test_the_step_up_lasts_five_minutes(world: World) -> None:
    user = world.users[("acme", Role.KEY_ADMIN)]
    seed = enrol_totp(user)
    client, _ = password_step(user, HOST)
    client.post("/mfa/verify/", {"code": next_code(seed)}, HTTP_HOST=HOST)
    decide = "/approvals/00000000-0000-0000-0000-000000000008/approve/"
    assert client.post(decide, HTTP_HOST=HOST)["Location"] == "/approvals/"  # fresh: decides
    session = client.session
    session[VERIFIED_AT] = time.time() - services.STEP_UP_SECONDS - 1
    session.save()
    assert client.post(decide, HTTP_HOST=HOST)["Location"].startswith("/mfa/step-up/")


def test_a_fresh_console_session_passes_the_api_step_up(world: World) -> None:
    user = world.users[("acme", Role.KEY_ADMIN)]
    seed = enrol_totp(user)
    client, _ = password_step(user, HOST)
    client.post("/mfa/verify/", {"code": next_code(seed)}, HTTP_HOST=HOST)
    response = Api(HOST, client=client).post(
        "/api/v1/approvals/00000000-0000-0000-0000-000000000008/approve/", {}
    )
    assert response.status_code == 404  # past the step-up: there is no such request


def test_passkey_options_name_the_host_and_exclude_known_credentials(world: World) -> None:
    client = _signed_in_as(world, Role.KEY_ADMIN)
    response = client.post("/mfa/passkeys/options/", HTTP_HOST=HOST)
    options = json.loads(response.content)
    assert options["rp"] == {"name": "KCM", "id": "acme.localhost"}
    assert options["user"]["name"] == "acme-key_admin"
    assert len(options["challenge"]) >= 43


def test_a_forged_passkey_registration_is_refused(world: World) -> None:
    client = _signed_in_as(world, Role.KEY_ADMIN)
    client.post("/mfa/passkeys/options/", HTTP_HOST=HOST)
    forged = {"credential": {"id": "AAAA", "rawId": "AAAA", "type": "public-key", "response": {}}}
    response = Api(HOST, client=client).post("/mfa/passkeys/", forged)
    assert_problem(response, 403, "webauthn_invalid")
    assert not MfaDevice.objects.filter(user=world.users[("acme", Role.KEY_ADMIN)]).exists()
    # Without options first there is no ceremony to finish.
    assert_problem(Api(HOST, client=client).post("/mfa/passkeys/", forged), 403, "mfa_invalid_code")
    bad = Api(HOST, client=client).post("/mfa/passkeys/", raw="not json")
    assert_problem(bad, 403, "invalid_json")


def test_a_passkey_answer_without_a_pending_sign_in_is_refused(world: World) -> None:
    anonymous = Api(HOST)
    assert_problem(anonymous.post("/mfa/passkeys/auth/options/", {}), 403, "mfa_no_sign_in")
    assert_problem(anonymous.post("/mfa/passkeys/auth/", {}), 403, "mfa_no_sign_in")


def test_another_persons_passkey_does_not_sign_in(world: World) -> None:
    user = world.users[("acme", Role.KEY_ADMIN)]
    enrol_totp(user)
    # The victim's passkey has credential id AAAA (base64url of three zero bytes).
    MfaDevice.objects.create(
        user=world.users[("acme", Role.TENANT_ADMIN)],
        kind="webauthn",
        name="victim's key",
        confirmed=True,
        credential_id=b"\x00\x00\x00",
        public_key=b"not used",
    )
    client, _ = password_step(user, HOST)
    api = Api(HOST, client=client)
    options = json.loads(api.post("/mfa/passkeys/auth/options/", {}).content)
    assert options["rpId"] == "acme.localhost"
    forged = {"credential": {"id": "AAAA", "rawId": "AAAA", "type": "public-key", "response": {}}}
    assert_problem(api.post("/mfa/passkeys/auth/", forged), 403, "webauthn_invalid")
    assert "_auth_user_id" not in client.session


def test_operators_enrol_on_the_platform_console(world: World) -> None:
    client = _signed_in_as(world, Role.PLATFORM_OPERATOR, "platform")
    page = client.get("/mfa/", HTTP_HOST="localhost")
    assert page.status_code == 200 and not page.context["policy_editable"]
    refused = client.post("/mfa/policy/", {"require_for_admins": "on"}, HTTP_HOST="localhost")
    assert refused.status_code in (403, 404)


def test_the_tenant_setting_from_the_console(world: World) -> None:
    admin = _signed_in_as(world, Role.TENANT_ADMIN)
    page = admin.get("/mfa/", HTTP_HOST=HOST)
    assert page.context["policy_editable"]
    admin.post("/mfa/policy/", {"require_for_admins": "on"}, HTTP_HOST=HOST)
    assert services.policy_requires(world.tenants["acme"].pk)
    key_admin = _signed_in_as(world, Role.KEY_ADMIN)
    assert key_admin.post("/mfa/policy/", {}, HTTP_HOST=HOST).status_code == 302  # to /mfa/
    assert services.policy_requires(world.tenants["acme"].pk)
