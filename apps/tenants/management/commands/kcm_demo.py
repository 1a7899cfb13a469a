"""Create the demo tenant and its admin once; print the credentials only that first time."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from apps.core.roles import TENANT_ROLES, Role
from apps.tenants import services
from apps.tenants.grants import KeyGrant
from apps.tenants.models import Tenant


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args: Any, **options: Any) -> None:
        if Tenant.objects.filter(slug="demo").exists():
            self.stdout.write(
                "Demo tenant exists; its admin credentials were printed on the first run. "
                "Reset them with: manage.py changepassword admin"
            )
            return
        password = secrets.token_urlsafe(12)
        with transaction.atomic():
            tenant = services.tenant_create(slug="demo", name="Demo")
            User = get_user_model()
            user = User.objects.filter(username="admin").first()
            if user is None:
                user = User.objects.create_user(username="admin", password=password)
            else:
                user.set_password(password)
                user.save()
            # A demo to try everything with: every tenant role, and every service key to use.
            services.membership_set(
                tenant=tenant,
                user=user,
                roles=list(TENANT_ROLES),
                key_grant=KeyGrant.everything(),
            )
            platform = Tenant.objects.get(schema_name="public")
            services.membership_set(tenant=platform, user=user, roles=[Role.PLATFORM_OPERATOR])
        self.stdout.write(
            self.style.WARNING(
                "\n  Demo tenant created. Sign in (shown once, store it now):\n"
                f"    user: admin   password: {password}\n"
                "  admin holds every role of 'demo' and is platform operator.\n"
            )
        )
