from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms

from apps.core.errors import ValidationFailed
from apps.core.roles import TENANT_ROLES, Role
from apps.tenants.grants import ALL_KEYS, KeyGrant

_ROLE_LABELS = dict(Role.choices)


def role_choices(held: Iterable[str], *, platform: bool = False) -> list[tuple[str, str]]:
    """The roles a console form offers: only those the signed-in actor holds (nobody grants a
    role they do not hold; the service refuses it anyway)."""
    offered = [Role.PLATFORM_OPERATOR] if platform else list(TENANT_ROLES)
    return [(role.value, role.label) for role in offered if role in set(held)]


class KeyGrantFields(forms.Form):
    """A key user's grant as two text fields; blank service keys: the default grant."""

    service_keys = forms.CharField(
        required=False,
        max_length=4000,
        help_text="For a key user: service key names, comma-separated, or * for all. "
        "Blank: your own grant.",
    )
    context = forms.CharField(
        required=False,
        max_length=4000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Encryption context every request must carry: one key=value per line "
        "(or just key, for any value).",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        names = [name.strip() for name in data.get("service_keys", "").split(",") if name.strip()]
        context: dict[str, str | None] = {}
        for line in data.get("context", "").splitlines():
            if line.strip():
                key, sep, value = line.partition("=")
                context[key.strip()] = value.strip() if sep else None
        if not names:
            if context:
                self.add_error("service_keys", "Name the service keys the context applies to.")
            data["key_grant"] = None
            return data
        try:
            data["key_grant"] = KeyGrant.parse({"service_keys": names, "context": context})
        except ValidationFailed as exc:
            self.add_error("service_keys", exc.detail)
        return data


def grant_initial(raw: Any) -> dict[str, str]:
    """A stored grant as KeyGrantFields' initial values."""
    if not isinstance(raw, dict):
        return {"service_keys": "", "context": ""}
    keys = raw.get("service_keys") or []
    lines = [
        key if value is None else f"{key}={value}"
        for key, value in (raw.get("context") or {}).items()
    ]
    return {
        "service_keys": ALL_KEYS if keys == [ALL_KEYS] else ", ".join(keys),
        "context": "\n".join(lines),
    }


class RoleForm(KeyGrantFields):
    """A member's roles and grant. Only the roles the actor holds are offered; the others the
    member holds are kept as they are (the view merges them back)."""

    roles = forms.MultipleChoiceField(
        choices=[], required=False, widget=forms.CheckboxSelectMultiple
    )

    def __init__(self, *args: Any, held: Iterable[str] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["roles"].choices = role_choices(held)  # type: ignore[attr-defined]


class TokenForm(KeyGrantFields):
    name = forms.CharField(max_length=100)
    role = forms.ChoiceField(choices=[])
    expires_at = forms.DateTimeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Optional (UTC); by default, and at most, the longest a token may live.",
    )
    field_order = ["name", "role", "expires_at", "service_keys", "context"]

    def __init__(self, *args: Any, held: Iterable[str] = (), platform: bool = False, **kw: Any):
        super().__init__(*args, **kw)
        self.fields["role"].choices = role_choices(held, platform=platform)  # type: ignore[attr-defined]
        if platform:
            del self.fields["service_keys"], self.fields["context"]

    def clean(self) -> dict[str, Any]:
        if "service_keys" not in self.fields:
            return forms.Form.clean(self) or {}
        return super().clean()


class TenantForm(forms.Form):
    slug = forms.CharField(max_length=40)
    name = forms.CharField(max_length=200, required=False)


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=500, required=False)
