"""Tokens made before KCM_TOKEN_MAX_LIFETIME_DAYS existed may have no expiry: give each
unrevoked one the longest lifetime a new token gets, counted from this upgrade (not from its
creation, which would cut integrations off without warning)."""

from datetime import timedelta

from django.conf import settings
from django.db import migrations
from django.utils import timezone


def tokens_expire(apps, schema_editor):  # type: ignore[no-untyped-def]
    ApiToken = apps.get_model("tenants", "ApiToken")
    latest = timezone.now() + timedelta(days=settings.KCM_TOKEN_MAX_LIFETIME_DAYS)
    ApiToken.objects.filter(expires_at__isnull=True, revoked_at__isnull=True).update(
        expires_at=latest
    )


class Migration(migrations.Migration):
    dependencies = [("tenants", "0008_invitations")]

    operations = [migrations.RunPython(tokens_expire, migrations.RunPython.noop, elidable=True)]
