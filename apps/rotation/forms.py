from __future__ import annotations

from django import forms

from apps.rotation.models import PolicyLevel
from apps.rotation.policies import MAX_PERIOD_DAYS


class RotateForm(forms.Form):
    dry_run = forms.BooleanField(required=False)


class PolicyForm(forms.Form):
    period_days = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_PERIOD_DAYS, label="Rotate every (days)"
    )
    max_usage = forms.IntegerField(
        required=False, min_value=1, label="Rotate after (encryptions, L3 only)"
    )


class DefaultForm(PolicyForm):
    level = forms.ChoiceField(choices=PolicyLevel.choices)
