"""Every registered URL of a URLconf, with sample arguments, for parametrised tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver

SAMPLE_ARGS = {
    "membership_id": "1",
    "token_id": "1",
    "key_id": str(uuid.UUID(int=1)),
    "name": "payments",
    "slug": "acme",
    "action": "suspend",
    "export_id": str(uuid.UUID(int=2)),
    "job_id": str(uuid.UUID(int=3)),
    "run_id": str(uuid.UUID(int=4)),
    "manager_id": str(uuid.UUID(int=5)),
    "import_token_id": str(uuid.UUID(int=6)),
    "version": "1",
    "invitation_id": "1",
    "secret": "no-such-invitation-secret",
    "request_id": str(uuid.UUID(int=8)),
    "sink_id": str(uuid.UUID(int=7)),
    "device_uid": str(uuid.UUID(int=9)),
}

# Open on every host by design: liveness, the API description, the sign-in form, and the page
# an invitation link opens (for people who are not members yet; the link's secret is the key).
# The second sign-in step (apps.mfa) answers only a session holding a pending sign-in of this
# tenant (tests/security/test_mfa.py proves it), so it cannot be role-checked either.
PUBLIC = {
    "api-schema",
    "api-docs",
    "console:login",
    "console:logout",
    "console:invitation",
    # The single sign-on round trip: for people not signed in yet (tests/security/test_sso.py).
    "console:sso-login",
    "console:sso-callback",
    "console:mfa-verify",
    "console:mfa-passkey-auth-options",
    "console:mfa-passkey-auth",
}


@dataclass(frozen=True)
class Route:
    name: str
    path: str
    callback: Any

    @property
    def methods(self) -> list[str]:
        view_class = getattr(self.callback, "cls", None) or getattr(
            self.callback, "view_class", None
        )
        if view_class is None:
            return ["GET", "POST"]
        return [
            m.upper() for m in ("get", "post", "patch", "put", "delete") if hasattr(view_class, m)
        ]

    @property
    def view_class(self) -> Any:
        return getattr(self.callback, "cls", None)

    def __str__(self) -> str:
        return f"{self.name}:{self.path}"


def _walk(patterns: list[Any], prefix: str, namespace: str) -> list[Route]:
    routes: list[Route] = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            ns = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            routes += _walk(pattern.url_patterns, prefix + str(pattern.pattern), ns)
        elif isinstance(pattern, URLPattern):
            route = prefix + str(pattern.pattern)
            for arg, value in SAMPLE_ARGS.items():
                for converter in ("int", "uuid", "slug", "str", "path"):
                    route = route.replace(f"<{converter}:{arg}>", value)
            assert "<" not in route, f"add a sample argument for {route}"
            routes.append(Route(f"{namespace}{pattern.name}", "/" + route, pattern.callback))
    return routes


def routes(urlconf: str) -> list[Route]:
    return _walk(get_resolver(urlconf).url_patterns, "", "")


def tenant_routes() -> list[Route]:
    return routes("kms_project.urls")


def platform_routes() -> list[Route]:
    return routes("kms_project.urls_public")
