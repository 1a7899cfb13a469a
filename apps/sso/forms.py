"""The settings form: parses only; apps.sso.services checks and saves."""

from __future__ import annotations

from typing import Any

from django import forms

from apps.sso.models import OidcProvider


def role_map_text(role_map: dict[str, list[str]]) -> str:
    return "\n".join(f"{value} = {', '.join(roles)}" for value, roles in sorted(role_map.items()))


def role_map_parse(text: str) -> dict[str, list[str]]:
    """Lines of `claim value = role, role`."""
    mapped: dict[str, list[str]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        value, sep, roles = line.rpartition("=")
        if not sep or not value.strip():
            raise forms.ValidationError(f"Line {number}: write `claim value = role, role`.")
        mapped[value.strip()] = [r.strip() for r in roles.split(",") if r.strip()]
    return mapped


class ProviderForm(forms.Form):
    name = forms.CharField(max_length=60, help_text="Shown on the sign-in button.")
    issuer = forms.URLField(max_length=500, assume_scheme="https")
    client_id = forms.CharField(max_length=255)
    client_secret = forms.CharField(
        max_length=500,
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Write-only. Leave blank to keep the stored secret.",
    )
    role_claim = forms.CharField(max_length=100, initial="groups")
    role_map = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="One line per claim value: `kcm-admins = tenant_admin`.",
    )
    allowed_domains = forms.CharField(
        max_length=2000, help_text="Email domains allowed to sign in, separated by commas."
    )
    local_passwords = forms.BooleanField(
        required=False, initial=True, label="Members may also sign in with a password"
    )

    def __init__(self, *args: Any, provider: OidcProvider | None = None, **kwargs: Any):
        if provider is not None:
            kwargs["initial"] = {
                "name": provider.name,
                "issuer": provider.issuer,
                "client_id": provider.client_id,
                "role_claim": provider.role_claim,
                "role_map": role_map_text(provider.role_map),
                "allowed_domains": ", ".join(provider.allowed_domains),
                "local_passwords": provider.local_passwords,
            }
        super().__init__(*args, **kwargs)

    def clean_role_map(self) -> dict[str, list[str]]:
        return role_map_parse(self.cleaned_data["role_map"])

    def service_kwargs(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "issuer": data["issuer"],
            "client_id": data["client_id"],
            "client_secret": data["client_secret"] or None,
            "role_claim": data["role_claim"],
            "role_map": data["role_map"],
            "allowed_domains": data["allowed_domains"].split(","),
            "local_passwords": data["local_passwords"],
        }
