from django.apps import AppConfig


class RotationConfig(AppConfig):
    name = "apps.rotation"
    label = "rotation"
