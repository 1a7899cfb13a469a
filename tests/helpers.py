"""Test helpers: an API client bound to a host and token, and problem+json assertions."""

from __future__ import annotations

import json
from typing import Any

from django.db import connection
from django.test import Client


class Api:
    """A client for one host, optionally with a bearer token; JSON in, JSON out."""

    def __init__(self, host: str, token: str | None = None, client: Client | None = None):
        self.host = host
        self.client = client or Client(HTTP_HOST=host)
        self.token = token

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | str | None = None,
        content_type: str = "application/json",
        **headers: str,
    ) -> Any:
        extra: dict[str, Any] = {"HTTP_HOST": self.host}
        if self.token:
            extra["HTTP_AUTHORIZATION"] = f"Bearer {self.token}"
        for name, value in headers.items():
            extra[f"HTTP_{name.upper()}"] = value
        data: Any = raw if raw is not None else (json.dumps(body) if body is not None else None)
        kwargs: dict[str, Any] = {"content_type": content_type} if data is not None else {}
        if data is not None:
            kwargs["data"] = data
        response = getattr(self.client, method.lower())(path, **kwargs, **extra)
        response.json_body = (
            response.json()
            if response.get("Content-Type", "").endswith("json") and response.content
            else None
        )
        connection.set_schema_to_public()  # type: ignore[attr-defined]
        return response

    def get(self, path: str, **kw: Any) -> Any:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("POST", path, body, **kw)


def host_of(slug: str) -> str:
    return "localhost" if slug == "platform" else f"{slug}.localhost"


def assert_problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"] == "application/problem+json", response["Content-Type"]
    assert response.json_body["code"] == code, response.json_body
    assert response.json_body["status"] == status


class KeystoreCalls:
    """Counts the calls made to one keystore object's operations while active (tests and
    benchmarks prove which paths stay off the HSM; production code carries no counters)."""

    OPERATIONS = (
        "encrypt",
        "decrypt",
        "create_root_key",
        "destroy",
        "exists",
        "sign",
        "create_signing_key",
        "public_key_der",
        "import_root_key",
        "key_check",
    )

    def __init__(self, keystore: Any) -> None:
        self.keystore = keystore
        self.count = 0

    def __enter__(self) -> KeystoreCalls:
        for name in self.OPERATIONS:
            original = getattr(self.keystore, name)

            def counted(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                self.count += 1
                return _original(*args, **kwargs)

            setattr(self.keystore, name, counted)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.OPERATIONS:
            delattr(self.keystore, name)  # the class's method shows through again
