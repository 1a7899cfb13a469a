from django.apps import AppConfig


class KeychainConfig(AppConfig):
    name = "apps.keychain"
    label = "keychain"

    def ready(self) -> None:
        from apps.core.signals import tenant_terminating
        from apps.keychain.shredding import platform_handles, token_claims_of_tenant_release

        tenant_terminating.connect(platform_handles, dispatch_uid="keychain-platform-handles")
        tenant_terminating.connect(
            token_claims_of_tenant_release, dispatch_uid="keychain-token-claims"
        )
