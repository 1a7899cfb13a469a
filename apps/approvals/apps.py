from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "apps.approvals"
    label = "approvals"

    def ready(self) -> None:
        from apps.approvals.services import gate, gates_action, platform_gate
        from apps.core.approvals import gate_register, policy_register

        gate_register(gate)
        gate_register(platform_gate)
        policy_register(gates_action)
