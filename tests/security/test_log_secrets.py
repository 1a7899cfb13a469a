"""No token, PIN, key material or encryption-context value reaches a log line, even at DEBUG;
and every line the web and worker processes write is one JSON object with its context.

A live stack (gunicorn and a Celery worker, KCM_LOG_LEVEL=DEBUG, KCM_LOG_FORMAT=json) serves
real traffic: data keys under a context holding a marker, encrypt/decrypt of a marked
plaintext, a wrong context, a wrong token, a malformed body, a console sign-in with a wrong
password, a HYOK key manager with a PIN, and an L1 rotation whose rewrap job runs in the worker.
Then everything both processes wrote is searched for each secret, and parsed line by line.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.e2e.stack import LiveStack
from tests.e2e.tenantkit import KEY_ADMIN, KEY_USER, Tenant, create_chain, provision_tenant
from tests.keychain.test_hyok_pkcs11 import CustomerToken

SERVICE = "/api/v1/service-keys/payments"
BASE_FIELDS = {"time", "level", "logger", "process", "message"}
REQUEST_FIELDS = {"request_id", "tenant", "principal", "method", "route", "status", "duration_ms"}


@dataclass
class Traffic:
    stack: LiveStack
    tenant: Tenant
    secrets: dict[str, str]  # what -> value that must appear in no log line
    rotate_request_id: str
    generate_request_id: str


def _send(
    stack: LiveStack,
    tenant: Tenant,
    path: str,
    body: Any,
    *,
    token: str,
    request_id: str | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {token}", "X-Request-Id": request_id or ""}
    if raw is not None:
        headers["Content-Type"] = "application/json"
    status, reply_headers, data = stack.request(
        "POST", path, host=tenant.host, json=body, headers=headers, data=raw
    )
    return status, reply_headers, json.loads(data) if data else None


@pytest.fixture(scope="module")
def traffic() -> Iterator[Traffic]:
    token = CustomerToken()
    env = {**os.environ, "KCM_LOG_LEVEL": "DEBUG", "KCM_LOG_FORMAT": "json"}
    try:
        with LiveStack(web_workers=1, celery_pool="solo", env=env) as stack:
            yield _run_traffic(stack, token)
    finally:
        token.delete()


def _run_traffic(stack: LiveStack, token: CustomerToken) -> Traffic:
    tenant = provision_tenant(stack, "logs", (KEY_ADMIN, KEY_USER))
    l1_id = create_chain(stack, tenant)
    user, admin = tenant.tokens[KEY_USER], tenant.tokens[KEY_ADMIN]
    found = {"key user token": user, "key admin token": admin, "HYOK PIN": token.pin}
    # A token is kcm_<id>_<secret>: its id names the principal, its secret never appears.
    found["key user token's secret"] = user.split("_", 2)[2]
    found["key admin token's secret"] = admin.split("_", 2)[2]
    context_value = f"ctx-marker-{secrets.token_hex(8)}"
    found["context value"] = context_value
    context = {"order": context_value}

    generate_id = f"gen-{secrets.token_hex(6)}"
    status, headers, made = _send(
        stack, tenant, f"{SERVICE}/generate-data-key/", {"context": context},
        token=user, request_id=generate_id,
    )  # fmt: skip
    assert status == 200, made
    assert headers["X-Request-Id"] == generate_id
    found["data key"] = made["plaintext"]
    found["data key (hex)"] = base64.b64decode(made["plaintext"]).hex()
    status, _, opened = _send(
        stack, tenant, f"{SERVICE}/decrypt-data-key/",
        {"ciphertext": made["ciphertext"], "context": context}, token=user,
    )  # fmt: skip
    assert status == 200 and opened["plaintext"] == made["plaintext"], opened

    plaintext = base64.b64encode(f"plain-marker-{secrets.token_hex(8)}".encode()).decode()
    found["plaintext"] = plaintext
    status, _, sealed = _send(
        stack, tenant, f"{SERVICE}/encrypt/", {"plaintext": plaintext, "context": context},
        token=user,
    )  # fmt: skip
    assert status == 200, sealed
    # Failing requests: a wrong context, a wrong token, a malformed body.
    wrong_context = f"wrong-ctx-{secrets.token_hex(8)}"
    found["wrong context value"] = wrong_context
    status, _, refused = _send(
        stack, tenant, f"{SERVICE}/decrypt/",
        {"ciphertext": sealed["ciphertext"], "context": {"order": wrong_context}}, token=user,
    )  # fmt: skip
    assert 400 <= status < 500, refused
    wrong_token = f"kcm_{secrets.token_urlsafe(32)}"
    found["wrong token"] = wrong_token
    status, _, refused = _send(
        stack, tenant, f"{SERVICE}/generate-data-key/", {}, token=wrong_token
    )
    assert status == 401, refused
    broken = f"broken-marker-{secrets.token_hex(8)}"
    found["malformed body"] = broken
    status, headers, refused = _send(
        stack, tenant, f"{SERVICE}/encrypt/", None, token=user,
        request_id="not a valid id!", raw=f'{{"plaintext": "{broken}'.encode(),
    )  # fmt: skip
    assert status == 400, refused
    # An id that is not well formed is replaced, and the problem names the one used.
    assert headers["X-Request-Id"] != "not a valid id!"
    assert refused["request_id"] == headers["X-Request-Id"]

    # A console sign-in with a wrong password (django-axes logs failures).
    password = f"pw-marker-{secrets.token_hex(8)}"
    found["password"] = password
    status, headers, page = stack.request("GET", "/login/", host=tenant.host)
    csrf = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    cookie = next(c for c in headers.get_all("Set-Cookie") or [] if c.startswith("csrftoken="))
    assert status == 200 and csrf, page[:500]
    form = urlencode(
        {"csrfmiddlewaretoken": csrf[1].decode(), "username": "nobody", "password": password}
    )
    status, _, page = stack.request(
        "POST", "/login/", host=tenant.host, data=form.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "Cookie": cookie.split(";")[0], "Referer": f"http://{tenant.host}/login/"},
    )  # fmt: skip
    assert status == 400 and b"wrong password" in page, page[-1500:]

    # A customer's PKCS#11 token, reached with its PIN.
    label = token.create_key(f"held-{secrets.token_hex(3)}")
    status, _, manager = _send(
        stack, tenant, "/api/v1/key-managers/",
        {"name": "customer hsm", "kind": "pkcs11",
         "settings": {"library": token.library, "token_label": token.label},
         "credentials": {"pin": token.pin}},
        token=admin,
    )  # fmt: skip
    assert status == 201, manager
    status, _, linked = _send(
        stack, tenant, "/api/v1/customer-keys/hyok/",
        {"name": "held", "key_manager_id": manager["id"], "external_key_id": label},
        token=admin,
    )  # fmt: skip
    assert status == 201, linked

    # A rotation: its rewrap job runs in the worker, under the request's id.
    rotate_id = f"rot-{secrets.token_hex(6)}"
    status, _, started = _send(
        stack, tenant, f"/api/v1/rotation/keys/{l1_id}/rotate/", {},
        token=admin, request_id=rotate_id,
    )  # fmt: skip
    assert status == 202, started
    job_path = f"/api/v1/rotation/jobs/{started['job']['id']}/"
    deadline = time.monotonic() + 60
    while True:
        _, _, raw = stack.request(
            "GET", job_path, host=tenant.host, headers={"Authorization": f"Bearer {admin}"}
        )
        if json.loads(raw)["state"] not in ("queued", "running"):
            break
        assert time.monotonic() < deadline, "the rewrap job did not finish"
        time.sleep(0.2)
    time.sleep(0.5)  # the worker's last lines
    return Traffic(stack, tenant, found, rotate_id, generate_id)


def _lines(stack: LiveStack, name: str) -> list[dict[str, Any]]:
    parsed = []
    for number, line in enumerate(stack.log(name).splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"{name} line {number} is not JSON: {line[:300]!r}") from None
        assert isinstance(entry, dict) and entry.keys() >= BASE_FIELDS, line[:300]
        parsed.append(entry)
    return parsed


def test_no_secret_reaches_a_log_line(traffic: Traffic) -> None:
    for name in ("web", "worker"):
        text = traffic.stack.log(name)
        assert len(text.splitlines()) > 10  # DEBUG was on: there is something to search
        leaked = [what for what, value in traffic.secrets.items() if value in text]
        assert not leaked, f"{name} logged: {leaked}"


def test_every_line_is_json_and_each_request_is_summed_up(traffic: Traffic) -> None:
    web = _lines(traffic.stack, "web")
    requests = [entry for entry in web if entry["logger"] == "kcm.request"]
    routed = [entry for entry in requests if entry["route"]]  # not the probes
    assert len(routed) >= 10
    for entry in routed:
        assert entry.keys() >= REQUEST_FIELDS, entry
        assert "/" not in entry["route"], entry  # a pattern's name, never a path with ids
    (generate,) = [e for e in requests if e["request_id"] == traffic.generate_request_id]
    assert generate["route"] == "api:service-key-generate-data-key"
    assert generate["status"] == 200 and generate["method"] == "POST"
    assert generate["tenant"] == "logs"
    assert generate["principal"] == f"token:{traffic.tenant.tokens[KEY_USER].split('_')[1]}"
    assert isinstance(generate["duration_ms"], float | int)
    refused = [e for e in requests if e["status"] == 401]
    assert refused and all(e["principal"] == "anonymous" for e in refused), refused


def test_a_task_logs_the_request_that_queued_it(traffic: Traffic) -> None:
    worker = _lines(traffic.stack, "worker")
    admin = traffic.tenant.tokens[KEY_ADMIN]
    rewrap = [e for e in worker if e.get("task") == "apps.rotation.tasks.rewrap_job_run"]
    assert rewrap, [e["message"] for e in worker][-20:]
    for entry in rewrap:
        assert entry["request_id"] == traffic.rotate_request_id, entry
        assert entry["tenant"] == "logs", entry
        assert entry["principal"] == f"token:{admin.split('_')[1]}", entry
        assert entry["task_id"]
