"""Deny unless allowed: every API view names the roles it admits in `allowed_roles`."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, permissions
from rest_framework.request import Request

from apps.audit import context as audit_context
from apps.core.errors import Forbidden
from apps.core.tenancy import Principal
from apps.tenants.access import current_tenant


class WrongTenant(Forbidden):
    code = "wrong_tenant"
    title = "These credentials belong to another tenant"


class RoleNotAllowed(Forbidden):
    code = "role_not_allowed"
    title = "Your role does not allow this"


class HasTenantRole(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.auth
        if not isinstance(principal, Principal):
            raise exceptions.NotAuthenticated()
        audit_context.update(actor=principal.actor, role=principal.role)
        if principal.tenant_id != current_tenant().pk:
            raise WrongTenant()
        allowed = getattr(view, "allowed_roles", None)
        if not allowed:
            return False
        method_roles = getattr(view, "method_roles", {}).get(request.method, allowed)
        if not principal.holds_any(method_roles):
            raise RoleNotAllowed(
                f"This needs one of: {', '.join(sorted(method_roles))}; your roles: "
                f"{principal.role}."
            )
        return True
