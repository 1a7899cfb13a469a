"""DRF authentication: bearer API tokens, and console sessions (with CSRF enforced)."""

from __future__ import annotations

from typing import Any

from rest_framework import authentication
from rest_framework.request import Request

from apps.core.errors import KcmError
from apps.core.tenancy import Principal
from apps.tenants.access import current_tenant, principal_for_token, principal_for_user


class InvalidToken(KcmError):
    status = 401
    code = "invalid_token"
    title = "The API token is unknown, expired or revoked"


class NotAMember(KcmError):
    status = 403
    code = "not_a_member"
    title = "You are not a member of this tenant"


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, Principal] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        principal = principal_for_token(raw.strip())
        if principal is None:
            raise InvalidToken()
        return (None, principal)

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="kcm"'


class ConsoleSessionAuthentication(authentication.SessionAuthentication):
    """The console's session, for API calls made from the browser (CSRF enforced)."""

    def authenticate(self, request: Request) -> tuple[Any, Principal] | None:
        user = getattr(request._request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        self.enforce_csrf(request)
        principal = principal_for_user(user, current_tenant())
        if principal is None:
            raise NotAMember()
        return (user, principal)
