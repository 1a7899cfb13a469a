"""Migrate everything: the public schema, the tenant template, then every live tenant; then
create the platform keys that are missing (`kcm_keys init`)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connection
from django_tenants.utils import schema_exists

from apps.tenants.models import Domain, Tenant, TenantStatus


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = options["verbosity"]
        call_command("migrate_schemas", shared=True, interactive=False, verbosity=verbosity)
        public, _ = Tenant.objects.get_or_create(
            schema_name="public",
            defaults={"slug": "platform", "name": "KCM platform", "status": TenantStatus.ACTIVE},
        )
        Domain.objects.get_or_create(
            domain=settings.KCM_BASE_DOMAIN, defaults={"tenant": public, "is_primary": True}
        )
        template, _ = Tenant.objects.get_or_create(
            schema_name=settings.KCM_TEMPLATE_SCHEMA,
            defaults={
                "slug": "kcm-template",
                "name": "Tenant template",
                "status": TenantStatus.ACTIVE,
                "is_template": True,
            },
        )
        if not schema_exists(template.schema_name):
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE SCHEMA "{template.schema_name}"')
        schemas = (
            Tenant.objects.exclude(schema_name="public")
            .exclude(status=TenantStatus.TERMINATED)
            .order_by("-is_template", "pk")
            .values_list("schema_name", flat=True)
        )
        for schema in schemas:
            if schema_exists(schema):
                call_command(
                    "migrate_schemas", schema_name=schema, interactive=False, verbosity=verbosity
                )
        # The platform's own keys, once, under a lock; requests only read them.
        call_command("kcm_keys", "init", verbosity=verbosity)
        self.stdout.write(self.style.SUCCESS("KCM database is up to date."))
