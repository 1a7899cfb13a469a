"""Members hold a set of roles; key users (members and tokens) hold an explicit key grant.

Existing memberships keep their one role as a one-element set; existing key_user members and
tokens get the grant of every service key, which is what they could use before."""

import django.contrib.postgres.fields
from django.db import migrations, models

GRANT_ALL = {"service_keys": ["*"], "context": {}}
ROLE_CHOICES = [
    ("platform_operator", "Platform operator"),
    ("tenant_admin", "Tenant admin"),
    ("key_admin", "Key admin"),
    ("key_user", "Key user"),
    ("auditor", "Auditor"),
]


def forwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    membership = apps.get_model("tenants", "Membership")
    token = apps.get_model("tenants", "ApiToken")
    for member in membership.objects.all():
        member.roles = [member.role]
        if member.role == "key_user":
            member.key_grant = GRANT_ALL
        member.save(update_fields=["roles", "key_grant"])
    token.objects.filter(role="key_user").update(key_grant=GRANT_ALL)


def backwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    membership = apps.get_model("tenants", "Membership")
    # A member with several roles keeps the most powerful one it holds.
    order = ["platform_operator", "tenant_admin", "key_admin", "key_user", "auditor"]
    for member in membership.objects.all():
        member.role = min(member.roles, key=order.index)
        member.save(update_fields=["role"])


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0006_terminated_root"),
    ]

    operations = [
        migrations.AddField(
            model_name="membership",
            name="roles",
            field=django.contrib.postgres.fields.ArrayField(
                base_field=models.CharField(choices=ROLE_CHOICES, max_length=32),
                default=list,
                size=None,
            ),
        ),
        migrations.AddField(
            model_name="membership",
            name="key_grant",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="apitoken",
            name="key_grant",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="membership",
            name="role",
            field=models.CharField(choices=ROLE_CHOICES, max_length=32, default=""),
        ),
        migrations.RunPython(forwards, backwards),
        migrations.AlterField(
            model_name="membership",
            name="roles",
            field=django.contrib.postgres.fields.ArrayField(
                base_field=models.CharField(choices=ROLE_CHOICES, max_length=32), size=None
            ),
        ),
        migrations.RemoveField(
            model_name="membership",
            name="role",
        ),
        migrations.AddConstraint(
            model_name="membership",
            constraint=models.CheckConstraint(
                condition=models.Q(("roles__len__gt", 0)), name="membership_holds_a_role"
            ),
        ),
    ]
