"""Manage tenants: create, suspend, resume, terminate, list."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import KcmError
from apps.tenants import selectors, services


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

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            if action == "list":
                for tenant in selectors.tenant_list():
                    self.stdout.write(f"{tenant.slug}\t{tenant.status}\t{tenant.name}")
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
