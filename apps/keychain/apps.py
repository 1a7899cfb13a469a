from django.apps import AppConfig


class KeychainConfig(AppConfig):
    name = "apps.keychain"
    label = "keychain"
