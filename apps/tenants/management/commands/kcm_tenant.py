"""Manage tenants: create, suspend, resume, terminate, list, and invite a new tenant's first
administrators (prints the one-time link)."""

from __future__ import annotations

import os
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import KcmError
from apps.core.roles import Role
from apps.core.tenancy import Principal
from apps.tenants import selectors, services
from apps.tenants.invitations import invitation_create
from apps.tenants.models import Tenant


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create and provision a tenant")
        create.add_argument("slug")
        create.add_argument("--name", default="")
        for action in ("suspend", "resume", "terminate"):
            cmd = sub.add_parser(action, help=f"{action} a tenant")
            cmd.add_argument("slug")
            if action != "resume":
                cmd.add_argument("--reason", default="")
        sub.add_parser("list", help="list tenants")
        invite = sub.add_parser(
            "invite",
            help="print a one-time invitation link to a tenant that has no administrator yet",
        )
        invite.add_argument("slug")
        invite.add_argument(
            "--roles",
            default=Role.TENANT_ADMIN.value,
            help="comma-separated roles to offer (default: tenant_admin)",
        )
        invite.add_argument("--email", default="", help="a note of where the link goes")
        # Production is reached over TLS on 443; development as `make run` serves it.
        invite.add_argument("--scheme", default="https" if settings.PRODUCTION else "http")
        invite.add_argument(
            "--port",
            default="" if settings.PRODUCTION else os.environ.get("KCM_PORT", "8000"),
            help="the port users reach KCM on, if not the scheme's own",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            if action == "list":
                for tenant in selectors.tenant_list():
                    self.stdout.write(f"{tenant.slug}\t{tenant.status}\t{tenant.name}")
                return
            if action == "invite":
                self._invite(options)
                return
            if action == "create":
                tenant = services.tenant_create(slug=options["slug"], name=options["name"])
            else:
                tenant = services.tenant_get(slug=options["slug"])
                if action == "suspend":
                    services.tenant_suspend(tenant=tenant, reason=options["reason"])
                elif action == "resume":
                    services.tenant_resume(tenant=tenant)
                else:
                    services.tenant_terminate(tenant=tenant, reason=options["reason"])
        except KcmError as exc:
            raise CommandError(f"{exc.detail} ({exc.code})") from None
        self.stdout.write(self.style.SUCCESS(f"{tenant.slug}: {tenant.status}"))

    def _invite(self, options: dict[str, Any]) -> None:
        """As a platform operator would through the API: allowed while the tenant has no
        tenant admin (afterwards its admins invite)."""
        tenant = services.tenant_get(slug=options["slug"])
        platform = Tenant.objects.get(schema_name="public")
        operator = Principal(
            kind="system",
            id=0,
            label="kcm_tenant",
            roles=frozenset({Role.PLATFORM_OPERATOR}),
            tenant_id=platform.pk,
        )
        invitation, link = invitation_create(
            actor=operator,
            tenant=tenant,
            roles=[role.strip() for role in options["roles"].split(",") if role.strip()],
            email=options["email"],
            scheme=options["scheme"],
            port=options["port"],
        )
        self.stdout.write(
            f"Invitation to {tenant.slug} as {', '.join(invitation.roles)}, valid until "
            f"{invitation.expires_at:%Y-%m-%d %H:%M} UTC. Send this link (shown once):"
        )
        self.stdout.write(link)
