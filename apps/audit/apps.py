from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "apps.audit"
    label = "audit"

    def ready(self) -> None:
        from apps.audit.receivers import request_outcome_record
        from apps.core.signals import request_outcome

        request_outcome.connect(request_outcome_record, dispatch_uid="audit-request-outcome")
