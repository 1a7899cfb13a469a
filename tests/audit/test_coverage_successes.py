"""Every audited API action writes exactly its event on success (one scenario per action,
tests/audit/scenarios.py), crypto events carry no key material and reads write nothing."""

from __future__ import annotations

from typing import Any

import pytest

from apps.core.roles import Role
from tests.audit.coveragekit import CTX, Log, _api_cases, expected_action
from tests.audit.scenarios import SUCCESS, _chain


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


def test_every_audited_write_endpoint_has_a_success_scenario_here() -> None:
    covered = {action for action, _ in SUCCESS.values()}
    for case in _api_cases():
        _slug, route, method = case.values
        if method in ("POST", "PATCH", "PUT", "DELETE"):
            assert expected_action(route, method) in covered, (
                f"add a scenario for {method} {route.path}"
            )
