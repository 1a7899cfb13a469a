from django.apps import AppConfig


class RotationPlatformConfig(AppConfig):
    """Platform-wide rotation runs: in the public schema only (each run fans out into one
    rewrap job per key in every tenant's schema)."""

    name = "apps.rotation.platform"
    label = "rotation_platform"
