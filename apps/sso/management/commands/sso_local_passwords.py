"""The way back when a tenant's provider is lost while local passwords are off: an operator
with shell access turns them on again (audited)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django_tenants.utils import tenant_context

from apps.audit.context import AuditContext, reset_context, set_context
from apps.core.errors import KcmError
from apps.sso.services import local_passwords_set
from apps.tenants.services import tenant_get


class Command(BaseCommand):
    help = "Turn password sign-in on or off for a tenant that has single sign-on."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("tenant", help="the tenant's slug")
        parser.add_argument("state", choices=["on", "off"])

    def handle(self, *args: Any, **options: Any) -> None:
        token = set_context(AuditContext(actor="system:sso_local_passwords"))
        try:
            tenant = tenant_get(slug=options["tenant"])
            with tenant_context(tenant):
                local_passwords_set(tenant=tenant, enabled=options["state"] == "on")
        except KcmError as exc:
            raise CommandError(exc.detail) from None
        finally:
            reset_context(token)
        self.stdout.write(f"Local passwords of {tenant.slug}: {options['state']}.")
