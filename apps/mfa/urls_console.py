"""Mounted under mfa/ on tenant hosts and on the platform console (kms_project.urls*)."""

from django.urls import path

from apps.mfa import views

urlpatterns = [
    path("", views.manage, name="mfa"),
    path("totp/", views.totp_start, name="mfa-totp-start"),
    path("totp/<uuid:device_uid>/", views.totp_confirm, name="mfa-totp"),
    path("devices/<uuid:device_uid>/remove/", views.device_remove, name="mfa-device-remove"),
    path("recovery-codes/", views.recovery_regenerate, name="mfa-recovery"),
    path("recovery-codes/new/", views.recovery_show, name="mfa-recovery-show"),
    path("passkeys/options/", views.passkey_register_options, name="mfa-passkey-options"),
    path("passkeys/", views.passkey_register, name="mfa-passkey-register"),
    path("passkeys/auth/options/", views.passkey_auth_options, name="mfa-passkey-auth-options"),
    path("passkeys/auth/", views.passkey_auth, name="mfa-passkey-auth"),
    path("policy/", views.policy_set, name="mfa-policy"),
    path("verify/", views.verify, name="mfa-verify"),
    path("step-up/", views.step_up, name="mfa-step-up"),
]
