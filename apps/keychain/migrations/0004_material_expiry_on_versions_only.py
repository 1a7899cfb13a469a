# A BYOK key's material expiry is stored once, on each version (it was also copied onto the key).
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("keychain", "0003_fewer_indexes")]

    operations = [migrations.RemoveField(model_name="customerkey", name="material_expires_at")]
