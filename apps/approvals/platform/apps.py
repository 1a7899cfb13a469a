from django.apps import AppConfig


class ApprovalsPlatformConfig(AppConfig):
    """The platform's approval requests (terminate a tenant): in the public schema only, where
    a tenant's schema-held approvals cannot be."""

    name = "apps.approvals.platform"
    label = "approvals_platform"
