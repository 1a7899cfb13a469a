from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "apps.approvals"
    label = "approvals"

    def ready(self) -> None:
        from apps.approvals.services import gate
        from apps.core.approvals import gate_register

        gate_register(gate)
