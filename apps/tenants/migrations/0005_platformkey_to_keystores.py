# PlatformKey now belongs to the keystores app (same table); only Django's state changes.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0004_clone_schema_script"),
        ("keystores", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="PlatformKey")],
            database_operations=[],
        ),
    ]
