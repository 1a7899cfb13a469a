from django.apps import AppConfig


class SsoConfig(AppConfig):
    name = "apps.sso"
    label = "sso"

    def ready(self) -> None:
        from apps.sso.hooks import hooks_register

        hooks_register()
