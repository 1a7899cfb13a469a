from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "apps.approvals"
    label = "approvals"

    def ready(self) -> None:
        from apps.approvals.services import gate, platform_gate
        from apps.core.approvals import gate_register

        gate_register(gate)
        gate_register(platform_gate)
