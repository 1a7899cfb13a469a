"""Second factors: enrol, verify and remove TOTP devices, recovery codes, the tenant's MFA
policy, and who must use a second factor. WebAuthn ceremonies live in apps.mfa.passkeys.

Codes, seeds and recovery codes never reach logs, audit records or error messages."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import timedelta

import pyotp
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.models import Outcome
from apps.audit.services import audit_record
from apps.core.errors import Forbidden, KcmError, NotFound, ServiceUnavailable, ValidationFailed
from apps.core.roles import Role
from apps.core.tenancy import Principal
from apps.keystores.base import KeystoreError
from apps.keystores.platform import HYOK_CREDENTIALS, platform_key
from apps.keystores.registry import platform_keystore
from apps.mfa.models import DeviceKind, MfaAttempts, MfaDevice, MfaPolicy, RecoveryCode

STEP_UP_SECONDS = 300
FAILURE_LIMIT = 5
LOCK_SECONDS = 900
RECOVERY_CODE_COUNT = 10
TOTP_PERIOD = 30
ADMIN_ROLES = frozenset({Role.TENANT_ADMIN, Role.KEY_ADMIN})


class InvalidCode(KcmError):
    status = 403
    code = "mfa_invalid_code"


class MfaLocked(KcmError):
    status = 429
    code = "mfa_locked"


class StepUpRequired(Forbidden):
    code = "mfa_step_up_required"


# --- who must use a second factor ---------------------------------------------------------


def has_factor(user_id: int) -> bool:
    return MfaDevice.objects.filter(user_id=user_id, confirmed=True).exists()


def policy_requires(tenant_id: int) -> bool:
    return MfaPolicy.objects.filter(tenant_id=tenant_id, require_for_admins=True).exists()


def mfa_required(principal: Principal) -> bool:
    """Whether this principal must have a second factor: operators when the platform says so
    (KCM_PLATFORM_REQUIRE_MFA), key and tenant admins when their tenant's policy says so."""
    if Role.PLATFORM_OPERATOR in principal.roles:
        return bool(settings.KCM_PLATFORM_REQUIRE_MFA)
    return principal.holds_any(ADMIN_ROLES) and policy_requires(principal.tenant_id)


def step_up_applies(principal: Principal, user_id: int) -> bool:
    """Step-up before approving: whenever the person has a factor or must have one."""
    return has_factor(user_id) or mfa_required(principal)


def policy_set(*, tenant_id: int, require_for_admins: bool) -> MfaPolicy:
    policy, _ = MfaPolicy.objects.update_or_create(
        tenant_id=tenant_id, defaults={"require_for_admins": require_for_admins}
    )
    audit_record(action="mfa.policy_set", details={"require_for_admins": require_for_admins})
    return policy


# --- sealing ------------------------------------------------------------------------------


def _aad(device: MfaDevice) -> bytes:
    return f"kcm-mfa-totp|{device.uid}|{device.user_id}".encode()


def _seal(device: MfaDevice, seed: str) -> bytes:
    try:
        return platform_keystore().encrypt(
            platform_key(HYOK_CREDENTIALS).handle, seed.encode(), _aad(device)
        )
    except KeystoreError as exc:
        raise ServiceUnavailable(
            f"The HSM cannot seal the seed ({exc.code}).", code="hsm_unavailable"
        ) from exc


def _open(device: MfaDevice) -> str:
    try:
        return (
            platform_keystore()
            .decrypt(
                platform_key(HYOK_CREDENTIALS).handle,
                bytes(device.secret_sealed or b""),
                _aad(device),
            )
            .decode()
        )
    except KeystoreError as exc:
        raise ServiceUnavailable(
            f"The HSM cannot open the seed ({exc.code}).", code="hsm_unavailable"
        ) from exc


# --- TOTP enrolment -----------------------------------------------------------------------


def totp_enrol_begin(*, user_id: int, name: str) -> MfaDevice:
    """An unconfirmed TOTP device with a fresh 160-bit seed; it counts once confirmed."""
    name = name.strip()[:100] or "Authenticator app"
    MfaDevice.objects.filter(user_id=user_id, kind=DeviceKind.TOTP, confirmed=False).delete()
    device = MfaDevice(user_id=user_id, kind=DeviceKind.TOTP, name=name)
    device.secret_sealed = _seal(device, pyotp.random_base32(32))
    device.save()
    return device


def totp_pending(*, user_id: int, device_uid: str) -> MfaDevice:
    device = MfaDevice.objects.filter(
        user_id=user_id, uid=device_uid, kind=DeviceKind.TOTP, confirmed=False
    ).first()
    if device is None:
        raise NotFound("No such enrolment in progress.", code="mfa_device_not_found")
    return device


def totp_provisioning(device: MfaDevice, *, account: str) -> tuple[str, str]:
    """The seed and its otpauth:// URI, for the enrolment page only (unconfirmed devices)."""
    seed = _open(device)
    uri = pyotp.TOTP(seed).provisioning_uri(name=account, issuer_name="KCM")
    return seed, uri


def totp_enrol_confirm(*, user_id: int, device_uid: str, code: str) -> list[str] | None:
    """Confirm an enrolment with a first code. Returns fresh recovery codes when this is the
    person's first factor (shown once), else None."""
    lock_check(user_id)
    with transaction.atomic():
        device = totp_pending(user_id=user_id, device_uid=device_uid)
        device = MfaDevice.objects.select_for_update().get(pk=device.pk)
        step = _totp_match(_open(device), code, after=0)
        if step is None:
            _fail(user_id, "enrol")
            raise InvalidCode("That code is not right; check the clock of your device.")
        first = not has_factor(user_id)
        device.confirmed = True
        device.last_timestep = step
        device.last_used_at = timezone.now()
        device.save()
        audit_record(action="mfa.enrolled", target=str(device.uid), details={"kind": "totp"})
        _succeed(user_id)
        return recovery_codes_regenerate(user_id=user_id) if first else None


def device_added(device: MfaDevice) -> list[str] | None:
    """After a WebAuthn registration: audit, and recovery codes if it is the first factor."""
    first = (
        not MfaDevice.objects.filter(user_id=device.user_id, confirmed=True)
        .exclude(pk=device.pk)
        .exists()
    )
    audit_record(action="mfa.enrolled", target=str(device.uid), details={"kind": device.kind})
    return recovery_codes_regenerate(user_id=device.user_id) if first else None


def device_remove(*, user_id: int, device_uid: str) -> None:
    """Remove one of the person's own factors (another person's device is not found)."""
    device = MfaDevice.objects.filter(user_id=user_id, uid=device_uid).first()
    if device is None:
        raise NotFound("No such device.", code="mfa_device_not_found")
    device.delete()
    if not has_factor(user_id):
        RecoveryCode.objects.filter(user_id=user_id).delete()
    audit_record(action="mfa.removed", target=str(device.uid), details={"kind": device.kind})


# --- recovery codes -----------------------------------------------------------------------


def _digest(user_id: int, code: str) -> str:
    normal = code.replace("-", "").replace(" ", "").lower()
    message = f"{user_id}|{normal}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()


def recovery_codes_regenerate(*, user_id: int) -> list[str]:
    """Replace the person's recovery codes by ten new ones (50 bits each), returned once."""
    if not has_factor(user_id):
        raise ValidationFailed("Enrol a factor first.", code="mfa_no_factor")
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(alphabet) for _ in range(10))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    with transaction.atomic():
        RecoveryCode.objects.filter(user_id=user_id).delete()
        RecoveryCode.objects.bulk_create(
            RecoveryCode(user_id=user_id, digest=_digest(user_id, c)) for c in codes
        )
    audit_record(action="mfa.recovery_codes_generated", details={"count": len(codes)})
    return codes


def recovery_codes_left(user_id: int) -> int:
    return RecoveryCode.objects.filter(user_id=user_id, used_at__isnull=True).count()


# --- verification -------------------------------------------------------------------------


def _totp_match(seed: str, code: str, *, after: int) -> int | None:
    """The time step (now ±1) whose code is `code`, if later than `after` (no replays)."""
    code = code.strip().replace(" ", "")
    if not (code.isascii() and code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(seed)
    now = int(time.time()) // TOTP_PERIOD
    for step in (now - 1, now, now + 1):
        if step > after and hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def lock_check(user_id: int) -> None:
    row = MfaAttempts.objects.filter(user_id=user_id).first()
    if row is not None and row.locked_until is not None and row.locked_until > timezone.now():
        raise MfaLocked(
            f"Too many wrong codes. Try again in {max(1, LOCK_SECONDS // 60)} minute(s)."
        )


def _fail(user_id: int, purpose: str) -> None:
    with transaction.atomic():
        row, _ = MfaAttempts.objects.select_for_update().get_or_create(user_id=user_id)
        row.failures += 1
        if row.failures >= FAILURE_LIMIT:
            row.locked_until = timezone.now() + timedelta(seconds=LOCK_SECONDS)
            row.failures = 0
        row.save()
    audit_record(
        action="mfa.verify_failed",
        outcome=Outcome.DENIED,
        error_code="mfa_invalid_code",
        details={"purpose": purpose},
        chained=False,
    )


def _succeed(user_id: int) -> None:
    MfaAttempts.objects.filter(user_id=user_id).update(failures=0, locked_until=None)


def code_verify(*, user_id: int, code: str, purpose: str) -> str:
    """Check a TOTP code or a recovery code of the person; returns the kind that passed
    ("totp" or "recovery_code"). Wrong codes count towards a lockout (MfaLocked), a TOTP code
    passes once, a recovery code once."""
    lock_check(user_id)
    code = (code or "").strip()
    with transaction.atomic():
        devices = MfaDevice.objects.select_for_update().filter(
            user_id=user_id, kind=DeviceKind.TOTP, confirmed=True
        )
        for device in devices:
            step = _totp_match(_open(device), code, after=device.last_timestep)
            if step is not None:
                device.last_timestep = step
                device.last_used_at = timezone.now()
                device.save(update_fields=["last_timestep", "last_used_at"])
                _succeed(user_id)
                audit_record(
                    action="mfa.verified",
                    target=str(device.uid),
                    details={"kind": "totp", "purpose": purpose},
                )
                return "totp"
        if len(code.replace("-", "")) == 10:
            used = RecoveryCode.objects.filter(
                user_id=user_id, digest=_digest(user_id, code), used_at__isnull=True
            ).update(used_at=timezone.now())
            if used:
                _succeed(user_id)
                audit_record(
                    action="mfa.recovery_code_used",
                    details={"purpose": purpose, "left": recovery_codes_left(user_id)},
                )
                return "recovery_code"
    _fail(user_id, purpose)
    raise InvalidCode("That code is not right.")


def passkey_verified(device: MfaDevice, *, purpose: str) -> None:
    _succeed(device.user_id)
    audit_record(
        action="mfa.verified",
        target=str(device.uid),
        details={"kind": "webauthn", "purpose": purpose},
    )


def passkey_failed(user_id: int, purpose: str) -> None:
    _fail(user_id, purpose)
