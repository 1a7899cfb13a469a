"""Audit log operations: verify, checkpoint, prune for a tenant or the platform. (Here, not in
apps.audit: naming a tenant by its slug is apps.tenants'.)"""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django_tenants.utils import schema_context

from apps.audit import retention, services
from apps.audit.context import AuditContext, reset_context, set_context
from apps.tenants.models import Tenant


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("action", choices=["verify", "checkpoint", "prune"])
        parser.add_argument("--tenant", help="tenant slug; default: the platform log")

    def handle(self, *args: Any, **options: Any) -> None:
        schema = "public"
        if options["tenant"]:
            tenant = Tenant.objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                raise CommandError(f"no tenant {options['tenant']!r}")
            schema = tenant.schema_name
        token = set_context(AuditContext(actor="system:kcm_audit"))
        try:
            with schema_context(schema):
                if options["action"] == "verify":
                    report = services.audit_verify()
                    self.stdout.write(json.dumps(report, indent=2))
                    if not report["ok"]:
                        raise CommandError(f"audit log of {schema} is NOT intact")
                elif options["action"] == "checkpoint":
                    checkpoint = services.checkpoint_create()
                    self.stdout.write(
                        f"checkpoint at #{checkpoint.seq}" if checkpoint else "empty log"
                    )
                else:
                    self.stdout.write(json.dumps(retention.audit_prune()))
        finally:
            reset_context(token)
