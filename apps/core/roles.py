"""Roles a principal holds in a tenant; every layer checks them, so they live here."""

from __future__ import annotations

from django.db import models


class Role(models.TextChoices):
    PLATFORM_OPERATOR = "platform_operator", "Platform operator"
    TENANT_ADMIN = "tenant_admin", "Tenant admin"
    KEY_ADMIN = "key_admin", "Key admin"
    KEY_USER = "key_user", "Key user"
    AUDITOR = "auditor", "Auditor"


TENANT_ROLES = (Role.TENANT_ADMIN, Role.KEY_ADMIN, Role.KEY_USER, Role.AUDITOR)
