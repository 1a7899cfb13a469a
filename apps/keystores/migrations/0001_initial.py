# PlatformKey moves from the tenants app to keystores; its table stays where it is.
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [("tenants", "0004_clone_schema_script")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="PlatformKey",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("purpose", models.CharField(max_length=32, unique=True)),
                        ("handle", models.CharField(max_length=200)),
                        ("public_key_der", models.BinaryField(blank=True)),
                        ("fingerprint", models.CharField(blank=True, max_length=64)),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                    ],
                    options={"db_table": "tenants_platformkey"},
                ),
            ],
            database_operations=[],
        ),
    ]
