from django.apps import AppConfig


class KeystoresConfig(AppConfig):
    name = "apps.keystores"
    label = "keystores"
    default_auto_field = "django.db.models.BigAutoField"
