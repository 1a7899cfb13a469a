from django import forms


class CodeForm(forms.Form):
    code = forms.CharField(max_length=20, strip=True)


class DeviceNameForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, strip=True)


class PolicyForm(forms.Form):
    require_for_admins = forms.BooleanField(required=False)
