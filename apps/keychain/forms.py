from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from apps.keychain import byok
from apps.keychain.models import CustomerKey
from apps.keystores.base import WRAPPING_KEY_BITS


class CustomerKeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    description = forms.CharField(max_length=500, required=False)


class ServiceKeyForm(forms.Form):
    name = forms.SlugField(max_length=64, help_text="e.g. payments")
    description = forms.CharField(max_length=500, required=False)
    customer_key = forms.ModelChoiceField(queryset=CustomerKey.objects.none(), required=False)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["customer_key"].queryset = CustomerKey.objects.filter(state="ENABLED")  # type: ignore[attr-defined]


class ScheduleDeletionForm(forms.Form):
    pending_days = forms.IntegerField(initial=30)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        field = self.fields["pending_days"]
        field.min_value = settings.KCM_DELETION_MIN_DAYS  # type: ignore[attr-defined]
        field.max_value = settings.KCM_DELETION_MAX_DAYS  # type: ignore[attr-defined]


# BYOK wizard.


class ByokKeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    description = forms.CharField(max_length=500, required=False)


class ImportParametersForm(forms.Form):
    algorithm = forms.ChoiceField()
    wrapping_key_bits = forms.TypedChoiceField(
        coerce=int,
        choices=[(bits, f"RSA-{bits}") for bits in WRAPPING_KEY_BITS],
        initial=max(WRAPPING_KEY_BITS),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["algorithm"].choices = [(a, a) for a in byok.supported_algorithms()]  # type: ignore[attr-defined]


class ImportForm(forms.Form):
    import_token = forms.CharField(max_length=200)
    wrapped_material = forms.FileField(help_text="the file tools/byok_wrap.py or openssl wrote")
    material_expires_at = forms.DateTimeField(
        required=False, help_text="optional, UTC: the key stops working then"
    )
    new_version = forms.BooleanField(required=False, help_text="new material as a new version")
