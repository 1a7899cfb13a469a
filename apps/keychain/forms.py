from __future__ import annotations

from django import forms
from django.conf import settings

from apps.keychain.models import CustomerKey


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
