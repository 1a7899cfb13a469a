"""Helpers for MFA tests: enrol a person's TOTP app through the service and make codes."""

from __future__ import annotations

import time
from typing import Any

import pyotp
from django.test import Client

from apps.mfa import services
from tests.conftest import PASSWORD


def enrol_totp(user: Any) -> str:
    """Enrol an authenticator app for `user` (as the enrolment page would); returns the seed."""
    device = services.totp_enrol_begin(user_id=user.pk, name="phone")
    seed, _ = services.totp_provisioning(device, account=user.username)
    services.totp_enrol_confirm(
        user_id=user.pk, device_uid=str(device.uid), code=pyotp.TOTP(seed).now()
    )
    return seed


def next_code(seed: str) -> str:
    """A code the server accepts once after enrolment (the next time step: ±1 is allowed)."""
    return pyotp.TOTP(seed).at(time.time() + 30)


def password_step(user: Any, host: str, client: Client | None = None) -> tuple[Client, Any]:
    client = client or Client()
    response = client.post(
        "/login/", {"username": user.username, "password": PASSWORD}, HTTP_HOST=host
    )
    return client, response
