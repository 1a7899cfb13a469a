from django.apps import AppConfig


class MfaConfig(AppConfig):
    name = "apps.mfa"
    label = "mfa"

    def ready(self) -> None:
        from apps.mfa.signin import second_step
        from apps.tenants.signin import second_step_register

        second_step_register(second_step)
