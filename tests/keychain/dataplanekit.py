"""A test client whose requests go through the data plane (apps.keychain.dataplane) in front
of Django, as kms_project.wsgi serves them; it notes which requests the data plane served
itself and which it handed to Django."""

from __future__ import annotations

from typing import Any

from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpResponse
from django.test import Client
from django.test.client import ClientHandler

from apps.keychain.dataplane import DataPlane

_DJANGO = object()


class PlaneHandler(ClientHandler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plane = DataPlane(lambda environ, start_response: _DJANGO)  # type: ignore[arg-type,return-value]
        self.served: list[bool] = []  # per request: True if the data plane answered it

    def __call__(self, environ: dict[str, Any]) -> Any:
        started: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            started.update(status=status, headers=headers)

        out = self.plane(environ, start_response)
        if out is _DJANGO:
            self.served.append(False)
            return super().__call__(environ)
        self.served.append(True)
        response = HttpResponse(b"".join(out), status=int(started["status"][:3]))
        del response["Content-Type"]
        for name, value in started["headers"]:
            response[name] = value
        response.wsgi_request = WSGIRequest(environ)  # type: ignore[attr-defined]
        return response


class PlaneClient(Client):
    """django.test.Client, through the data plane."""

    def __init__(self, **defaults: Any) -> None:
        super().__init__(**defaults)
        self.handler = PlaneHandler(enforce_csrf_checks=False)

    @property
    def served(self) -> list[bool]:
        return self.handler.served  # type: ignore[attr-defined]
