"""Console of customer-controlled L1s: the BYOK wizard (create → download the wrapping key and
token → upload the wrapped material → see the key check value) and the HYOK sync button."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from django import forms
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from apps.core.console import console_view, run_action
from apps.core.errors import ValidationFailed
from apps.core.roles import Role
from apps.keychain import byok, hyok, selectors_external
from apps.keychain.models import CustomerKey, ImportToken, Origin
from apps.keystores.base import WRAPPING_KEY_BITS

READERS = [Role.KEY_ADMIN, Role.TENANT_ADMIN, Role.AUDITOR]
ADMIN = [Role.KEY_ADMIN]


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


def _wizard_url(key_id: UUID) -> str:
    return reverse("console:byok-wizard", args=[key_id])


def _byok_key(key_id: UUID) -> CustomerKey:
    l1 = CustomerKey.objects.select_related("tenant_key").filter(pk=key_id).first()
    if l1 is None or l1.origin != Origin.BYOK:
        raise Http404
    return l1


def _invalid(form: forms.Form) -> Callable[[], None]:
    def fail() -> None:
        raise ValidationFailed(f"Please correct the form: {form.errors.as_text()}")

    return fail


@console_view(ADMIN)
@require_POST
def byok_create(request: HttpRequest) -> HttpResponse:
    form = ByokKeyForm(request.POST)
    if not form.is_valid():
        return run_action(
            request, _invalid(form), "", reverse("console:keys"), audit_action="key.create"
        )
    data = form.cleaned_data
    created: list[CustomerKey] = []
    response = run_action(
        request,
        lambda: created.append(
            byok.customer_key_create_byok(name=data["name"], description=data["description"])
        ),
        f"Customer key {data['name']} created; it waits for your key material.",
        reverse("console:keys"),
        audit_action="key.create",
    )
    # On to the wizard's next step; a refusal goes back to the chain with its message.
    return redirect(_wizard_url(created[0].pk)) if created else response


@console_view(READERS)
def byok_wizard(request: HttpRequest, key_id: UUID) -> HttpResponse:
    l1 = _byok_key(key_id)
    tokens = selectors_external.open_import_tokens(l1)
    can_manage = request.kcm_principal.role == Role.KEY_ADMIN  # type: ignore[attr-defined]
    return render(
        request,
        "keychain/byok_wizard.html",
        {
            "key": selectors_external.customer_key_material(l1),
            "can_manage": can_manage,
            "tokens": [{"id": t.pk, **selectors_external.import_parameters(t)} for t in tokens]
            if can_manage
            else [],
            "parameters_form": ImportParametersForm(),
            "import_form": ImportForm(
                initial={"import_token": byok.import_token_value(tokens[0]) if tokens else ""}
            ),
        },
    )


@console_view(ADMIN)
@require_POST
def byok_parameters(request: HttpRequest, key_id: UUID) -> HttpResponse:
    form = ImportParametersForm(request.POST)
    if not form.is_valid():
        return run_action(
            request, _invalid(form), "", _wizard_url(key_id), audit_action="key.import_parameters"
        )
    data = form.cleaned_data
    return run_action(
        request,
        lambda: byok.import_parameters_create(
            key_id=key_id, algorithm=data["algorithm"], wrapping_key_bits=data["wrapping_key_bits"]
        ),
        "Import parameters ready: download the wrapping key and the token below.",
        _wizard_url(key_id),
        audit_action="key.import_parameters",
    )


def _token(key_id: UUID, import_token_id: UUID) -> ImportToken:
    token = ImportToken.objects.filter(pk=import_token_id, key_id=key_id).first()
    if token is None:
        raise Http404
    return token


def _download(content: str, filename: str, content_type: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@console_view(ADMIN)
def byok_public_key(request: HttpRequest, key_id: UUID, import_token_id: UUID) -> HttpResponse:
    parameters = selectors_external.import_parameters(_token(key_id, import_token_id))
    return _download(
        parameters["public_key_pem"], "WrappingPublicKey.pem", "application/x-pem-file"
    )


@console_view(ADMIN)
def byok_token_file(request: HttpRequest, key_id: UUID, import_token_id: UUID) -> HttpResponse:
    token = _token(key_id, import_token_id)
    return _download(byok.import_token_value(token) + "\n", "ImportToken.txt", "text/plain")


@console_view(ADMIN)
@require_POST
def byok_import(request: HttpRequest, key_id: UUID) -> HttpResponse:
    form = ImportForm(request.POST, request.FILES)
    if not form.is_valid():
        return run_action(
            request, _invalid(form), "", _wizard_url(key_id), audit_action="key.import"
        )
    data = form.cleaned_data
    return run_action(
        request,
        lambda: byok.material_import(
            key_id=key_id,
            import_token=data["import_token"].strip(),
            wrapped=data["wrapped_material"].read(),
            material_expires_at=data["material_expires_at"],
            new_version=data["new_version"],
        ),
        lambda version: (
            f"Imported as version {version.version}, key check value "
            f"{version.key_check_value}: compare it with yours."
        ),
        _wizard_url(key_id),
        audit_action="key.import",
    )


@console_view(ADMIN)
@require_POST
def byok_delete_material(request: HttpRequest, key_id: UUID) -> HttpResponse:
    return run_action(
        request,
        lambda: byok.material_delete(key_id=key_id),
        "Imported material deleted; import the same material to restore the key.",
        _wizard_url(key_id),
        audit_action="key.import_delete",
    )


@console_view(ADMIN)
@require_POST
def hyok_sync(request: HttpRequest, key_id: UUID) -> HttpResponse:
    return run_action(
        request,
        lambda: hyok.hyok_key_sync(key_id=key_id),
        lambda l1: f"Key manager asked: the key is {l1.state}. {l1.state_reason}".strip(),
        reverse("console:keys"),
        audit_action="key.sync",
    )
