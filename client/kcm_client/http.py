"""KCM's HTTP API as the client uses it: bearer token, JSON in and out, problem+json refusals
raised as `KcmError`s, retries with back-off on 429/503 (honouring `Retry-After`) and on
connection failures, and bounded timeouts."""

from __future__ import annotations

import email.utils
import random
import time
from typing import Any

import httpx

from . import errors

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_WAIT = 30.0


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date), else None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unreadable: back off as if it were absent
    return max(0.0, when.timestamp() - time.time())


class Transport:
    """One HTTP connection pool to a KCM server."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        host_header: str | None = None,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.25,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if host_header:
            headers["Host"] = host_header
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )
        self.retries = retries
        self.backoff = backoff
        self.calls = 0  # requests sent, retries included: what `server_calls` measures

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        """Send one request (retrying what is safe to retry); the decoded JSON answer."""
        response = self._send(method, path, body, params)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise errors.KcmError(
                "the server's answer is not JSON", code="bad_response", status=response.status_code
            ) from None

    def download(self, path: str) -> httpx.Response:
        return self._send("GET", path, None, {})

    def _send(self, method: str, path: str, body: Any, params: dict[str, Any]) -> httpx.Response:
        attempt = 0
        while True:
            self.calls += 1
            try:
                response = self._http.request(
                    method, path, json=body, params={k: v for k, v in params.items() if v}
                )
            except httpx.TransportError as exc:
                if attempt >= self.retries:
                    raise errors.TransportError(
                        f"no answer from the server: {type(exc).__name__}"
                    ) from None
                self._sleep(attempt, None)
                attempt += 1
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.retries:
                self._sleep(attempt, _retry_after(response.headers.get("Retry-After")))
                attempt += 1
                continue
            if response.status_code >= 400:
                raise errors.from_problem(response.status_code, _problem(response))
            return response

    def _sleep(self, attempt: int, retry_after: float | None) -> None:
        if retry_after is None:
            retry_after = self.backoff * (2**attempt) * (0.5 + random.random())  # noqa: S311
        time.sleep(min(retry_after, MAX_RETRY_WAIT))


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    return {"detail": f"HTTP {response.status_code}"}
