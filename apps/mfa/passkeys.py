"""WebAuthn (passkeys, security keys) through py_webauthn: registration and authentication
ceremonies. The challenge lives in the session; the relying party is the host the console is
served on (RP ID = host name, origin = scheme://host[:port])."""

from __future__ import annotations

import json
from typing import Any

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from webauthn import (
    base64url_to_bytes,
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import bytes_to_base64url
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from apps.audit.models import Outcome
from apps.audit.services import audit_record
from apps.mfa import services
from apps.mfa.models import DeviceKind, MfaDevice

CHALLENGE = "kcm_mfa_webauthn_challenge"


def _rp_id(request: HttpRequest) -> str:
    return request.get_host().rsplit(":", 1)[0]


def _origin(request: HttpRequest) -> str:
    return f"{request.scheme}://{request.get_host()}"


def _credentials(user_id: int) -> list[PublicKeyCredentialDescriptor]:
    rows = MfaDevice.objects.filter(user_id=user_id, kind=DeviceKind.WEBAUTHN, confirmed=True)
    return [PublicKeyCredentialDescriptor(id=bytes(row.credential_id or b"")) for row in rows]


def _challenge(request: HttpRequest, purpose: str) -> bytes:
    saved = request.session.pop(CHALLENGE, None)
    if not saved or saved.get("purpose") != purpose:
        raise services.InvalidCode("The passkey ceremony expired; try again.")
    return base64url_to_bytes(saved["challenge"])


def registration_options(request: HttpRequest, *, user: Any) -> str:
    options = generate_registration_options(
        rp_id=_rp_id(request),
        rp_name="KCM",
        user_id=str(user.pk).encode(),
        user_name=user.get_username(),
        exclude_credentials=_credentials(user.pk),
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
    )
    request.session[CHALLENGE] = {
        "purpose": "register",
        "challenge": bytes_to_base64url(options.challenge),
    }
    return options_to_json(options)


def registration_verify(
    request: HttpRequest, *, user: Any, credential: dict[str, Any], name: str
) -> tuple[MfaDevice, list[str] | None]:
    """Verify the browser's attestation and keep the credential; returns the device and, for
    a first factor, fresh recovery codes."""
    challenge = _challenge(request, "register")
    try:
        verified = verify_registration_response(
            credential=json.dumps(credential),
            expected_challenge=challenge,
            expected_rp_id=_rp_id(request),
            expected_origin=_origin(request),
        )
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        audit_record(
            action="mfa.enrol_failed",
            outcome=Outcome.DENIED,
            error_code="webauthn_invalid",
            details={"kind": "webauthn"},
            chained=False,
        )
        raise services.InvalidCode(
            "The passkey registration could not be verified.", code="webauthn_invalid"
        ) from exc
    with transaction.atomic():
        device = MfaDevice.objects.create(
            user_id=user.pk,
            kind=DeviceKind.WEBAUTHN,
            name=name.strip()[:100] or "Passkey",
            confirmed=True,
            credential_id=verified.credential_id,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
        )
        codes = services.device_added(device)
    return device, codes


def authentication_options(request: HttpRequest, *, user_id: int, purpose: str) -> str:
    options = generate_authentication_options(
        rp_id=_rp_id(request),
        allow_credentials=_credentials(user_id),
        user_verification=UserVerificationRequirement.PREFERRED,
    )
    request.session[CHALLENGE] = {
        "purpose": purpose,
        "challenge": bytes_to_base64url(options.challenge),
    }
    return options_to_json(options)


def authentication_verify(
    request: HttpRequest, *, user_id: int, credential: dict[str, Any], purpose: str
) -> MfaDevice:
    """Verify an assertion by one of the person's own passkeys (another person's credential
    is unknown here) and advance its sign counter."""
    services.lock_check(user_id)
    challenge = _challenge(request, purpose)
    try:
        raw_id = base64url_to_bytes(credential.get("rawId") or credential.get("id") or "")
        with transaction.atomic():
            device = (
                MfaDevice.objects.select_for_update()
                .filter(user_id=user_id, kind=DeviceKind.WEBAUTHN, confirmed=True)
                .filter(credential_id=raw_id)
                .first()
            )
            if device is None:
                raise InvalidAuthenticationResponse("unknown credential")
            verified = verify_authentication_response(
                credential=json.dumps(credential),
                expected_challenge=challenge,
                expected_rp_id=_rp_id(request),
                expected_origin=_origin(request),
                credential_public_key=bytes(device.public_key or b""),
                credential_current_sign_count=device.sign_count,
            )
            device.sign_count = verified.new_sign_count
            device.last_used_at = timezone.now()
            device.save(update_fields=["sign_count", "last_used_at"])
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        services.passkey_failed(user_id, purpose)
        raise services.InvalidCode(
            "The passkey could not be verified.", code="webauthn_invalid"
        ) from exc
    services.passkey_verified(device, purpose=purpose)
    return device
