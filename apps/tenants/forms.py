from __future__ import annotations

from django import forms

from apps.core.roles import TENANT_ROLES, Role


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    email = forms.EmailField(required=False)
    password = forms.CharField(
        required=False,
        widget=forms.PasswordInput,
        help_text="Only for a new user: their initial password.",
    )
    role = forms.ChoiceField(choices=[(r.value, r.label) for r in TENANT_ROLES])


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=[(r.value, r.label) for r in TENANT_ROLES])


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100)
    role = forms.ChoiceField(choices=[(r.value, r.label) for r in TENANT_ROLES])
    expires_at = forms.DateTimeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Optional (UTC).",
    )


class PlatformTokenForm(TokenForm):
    role = forms.ChoiceField(choices=[(Role.PLATFORM_OPERATOR.value, Role.PLATFORM_OPERATOR.label)])


class TenantForm(forms.Form):
    slug = forms.CharField(max_length=40)
    name = forms.CharField(max_length=200, required=False)


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=500, required=False)
