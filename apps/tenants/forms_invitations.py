"""Console forms of invitations: the inviter's, and the invitee's sign-in or sign-up. They only
parse; apps.tenants.invitations decides."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib.auth.validators import UnicodeUsernameValidator

from apps.core.roles import TENANT_ROLES, Role
from apps.tenants.forms import KeyGrantFields, role_choices


class InvitationForm(KeyGrantFields):
    """Roles to offer (only those the inviter holds; every tenant role for a platform operator
    inviting a tenant's first members), a note of where the link goes, and a key user's grant."""

    roles = forms.MultipleChoiceField(choices=[], widget=forms.CheckboxSelectMultiple)
    email = forms.EmailField(
        required=False,
        label="Email (optional)",
        help_text="Where you will send the link: a note for you, never shown to the invitee.",
    )
    field_order = ["roles", "email", "service_keys", "context"]

    def __init__(self, *args: Any, held: Iterable[str] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        if Role.PLATFORM_OPERATOR in set(held):
            held = TENANT_ROLES
        self.fields["roles"].choices = role_choices(held)  # type: ignore[attr-defined]


class SignInForm(forms.Form):
    username = forms.CharField(max_length=150)
    password = forms.CharField(
        max_length=200, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"})
    )


class SignUpForm(forms.Form):
    new_username = forms.CharField(
        max_length=150, label="Choose a username", validators=[UnicodeUsernameValidator()]
    )
    email = forms.EmailField(label="Your email")
    new_password = forms.CharField(
        max_length=200,
        label="Choose a password",
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    new_password_again = forms.CharField(
        max_length=200,
        label="Repeat the password",
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("new_password") != data.get("new_password_again"):
            raise forms.ValidationError("The two passwords differ.")
        return data
