"""Finding 9 (issue 11), headers and cookies: a Content-Security-Policy without
'unsafe-inline' that the console and the API docs live within, the docs' scripts served by
KCM rather than a CDN, SameSite=Strict session cookies that end when idle, and HSTS preload
only when asked for. (The client address behind proxies: test_client_address.py.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.conf import settings
from django.test import Client

from apps.core import middleware
from tests.conftest import PASSWORD, World

HOST = "acme.localhost"
TEMPLATES = Path(settings.BASE_DIR) / "templates"
INLINE = re.compile(
    r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=\"|\son[a-z]+=\"|javascript:", re.IGNORECASE
)


def _policy(response: Any) -> dict[str, list[str]]:
    header = response.get("Content-Security-Policy", "")
    return {parts[0]: parts[1:] for parts in (d.split() for d in header.split(";") if d.strip())}


def _signed_in(world: World, role: str = "tenant_admin") -> Client:
    client = Client()
    user = world.users[("acme", role)]
    response = client.post(
        "/login/", {"username": user.username, "password": PASSWORD}, HTTP_HOST=HOST
    )
    assert response.status_code == 302
    return client


@pytest.mark.parametrize("path", ["/login/", "/api/docs/", "/api/v1/me/"])
def test_every_answer_carries_a_policy_without_unsafe_inline(world: World, path: str) -> None:
    response = Client().get(path, HTTP_HOST=HOST)
    policy = _policy(response)
    assert policy.get("default-src") == ["'none'"], response.get("Content-Security-Policy")
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "unsafe-inline" not in response["Content-Security-Policy"]


def test_no_template_has_inline_scripts_styles_or_handlers() -> None:
    offenders = [
        f"{path.relative_to(TEMPLATES)}: {match.group(0)}"
        for path in TEMPLATES.rglob("*.html")
        for match in INLINE.finditer(path.read_text())
    ]
    assert offenders == []


def test_console_pages_render_without_inline_code(world: World) -> None:
    client = _signed_in(world)
    for path in ("/", "/keys/", "/members/", "/tokens/", "/audit/", "/rotation/"):
        page = client.get(path, HTTP_HOST=HOST)
        assert page.status_code == 200, path
        assert INLINE.findall(page.content.decode()) == [], path


def test_the_api_docs_load_their_scripts_from_kcm(world: World) -> None:
    page = Client().get("/api/docs/", HTTP_HOST=HOST).content.decode()
    sources = re.findall(r'<(?:script|link)[^>]*(?:src|href)="([^"]+)"', page)
    assert sources and all(src.startswith("/") and "//" not in src for src in sources), sources
    assert INLINE.findall(page) == []
    script = next(src for src in sources if "script" in src and "api/docs" in src)
    init = Client().get(script, HTTP_HOST=HOST)
    assert init.status_code == 200 and init["Content-Type"].startswith("application/javascript")


def test_session_cookies_are_samesite_strict(world: World) -> None:
    client = _signed_in(world)
    assert client.cookies[settings.SESSION_COOKIE_NAME]["samesite"] == "Strict"
    assert client.cookies[settings.SESSION_COOKIE_NAME]["httponly"] is True


def test_an_idle_session_ends(world: World) -> None:
    client = _signed_in(world)
    assert client.get("/", HTTP_HOST=HOST).status_code == 200
    now = middleware.time.time()
    with mock.patch.object(
        middleware.time, "time", return_value=now + settings.KCM_SESSION_IDLE_SECONDS - 30
    ):
        assert client.get("/", HTTP_HOST=HOST).status_code == 200  # used: still signed in
    later = now + 2 * settings.KCM_SESSION_IDLE_SECONDS
    with mock.patch.object(middleware.time, "time", return_value=later):
        response = client.get("/", HTTP_HOST=HOST)
    assert response.status_code == 302 and "/login/" in response["Location"]


def _production_setting(name: str, **env: str) -> str:
    # A production process of its own, configured by nothing but what it is given here.
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith("KCM_")},
        "KCM_ENV": "production",
        "KCM_SECRET_KEY": "s" * 64,
        "KCM_DATABASE_URL": "postgres://unused@/unused",
        "DJANGO_SETTINGS_MODULE": "kms_project.settings",
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-c", f"from django.conf import settings; print(settings.{name})"],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        cwd=settings.BASE_DIR,
    )
    return result.stdout.strip()


def test_hsts_preload_only_when_asked_for() -> None:
    assert _production_setting("SECURE_HSTS_PRELOAD") == "False"
    assert _production_setting("SECURE_HSTS_PRELOAD", KCM_HSTS_PRELOAD="true") == "True"
    assert int(_production_setting("SECURE_HSTS_SECONDS")) > 0
