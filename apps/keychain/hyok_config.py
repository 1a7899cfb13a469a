"""What a tenant may give as a key manager's settings and credentials, checked before any
connection: the fields each kind takes, their types and sizes, and the platform's allow-lists
(KCM_HYOK_KMIP_ALLOWED_HOSTS, KCM_HYOK_PKCS11_LIBRARIES)."""

from __future__ import annotations

import fnmatch
from typing import Any

from django.conf import settings

from apps.core.errors import ValidationFailed
from apps.keychain.errors import KeyManagerNotAllowed
from apps.keychain.models import ExternalKeyManager

_MAX_FIELD = 64 * 1024


def public_settings(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """The settings worth showing and recording (no certificates)."""
    keys = ("host", "port", "server_name") if kind == "kmip" else ("library", "token_label")
    return {key: config[key] for key in keys if config.get(key) not in (None, "")}


def validated(
    kind: str, config: dict[str, Any], credentials: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    def fields(data: dict[str, Any], what: str, required: set[str], optional: set[str]) -> None:
        if not isinstance(data, dict):
            raise ValidationFailed(f"{what} must be an object.", code="invalid_key_manager")
        unknown = set(data) - required - optional
        missing = required - {k for k, v in data.items() if v not in (None, "")}
        if unknown or missing:
            raise ValidationFailed(
                f"{what}: "
                + "; ".join(
                    [f"unknown field {k!r}" for k in sorted(unknown)]
                    + [f"{k!r} is required" for k in sorted(missing)]
                ),
                code="invalid_key_manager",
            )
        for key, value in data.items():
            if key != "port" and not isinstance(value, str | None):
                raise ValidationFailed(
                    f"{what}: {key!r} must be a string.", code="invalid_key_manager"
                )
            if isinstance(value, str) and len(value) > _MAX_FIELD:
                raise ValidationFailed(f"{what}: {key!r} is too long.", code="invalid_key_manager")

    if kind == ExternalKeyManager.Kind.KMIP:
        fields(config, "settings", {"host", "port", "ca_pem", "client_cert_pem"}, {"server_name"})
        fields(credentials, "credentials", {"client_key_pem"}, {"username", "password"})
        host, port = config["host"], config["port"]
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ValidationFailed("settings: 'port' is 1-65535.", code="invalid_key_manager")
        if len(host) > 253 or any(c in host for c in ", /\t\n"):
            raise ValidationFailed(
                "settings: 'host' is one host name or address.", code="invalid_key_manager"
            )
        if not any(
            fnmatch.fnmatchcase(host.lower(), p.lower())
            for p in settings.KCM_HYOK_KMIP_ALLOWED_HOSTS
        ):
            raise KeyManagerNotAllowed(
                f"The platform does not allow KMIP servers at {host!r} "
                "(KCM_HYOK_KMIP_ALLOWED_HOSTS)."
            )
    elif kind == ExternalKeyManager.Kind.PKCS11:
        fields(config, "settings", {"library", "token_label"}, set())
        fields(credentials, "credentials", {"pin"}, set())
        if config["library"] not in settings.KCM_HYOK_PKCS11_LIBRARIES:
            raise KeyManagerNotAllowed(
                "The platform does not load this PKCS#11 library (KCM_HYOK_PKCS11_LIBRARIES)."
            )
    else:
        raise ValidationFailed("kind is 'kmip' or 'pkcs11'.", code="invalid_key_manager")
    clean_credentials = {k: v for k, v in credentials.items() if v not in (None, "")}
    return dict(config), clean_credentials
