"""Console of BYOK customer keys: the wizard (create → download the wrapping key and token →
upload the wrapped material → see the key check value)."""

from __future__ import annotations

from uuid import UUID

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from apps.core.approvals import console_gate
from apps.core.console import console_view, invalid_form, run_action
from apps.core.roles import Role
from apps.keychain import byok, selectors
from apps.keychain.forms import ByokKeyForm, ImportForm, ImportParametersForm
from apps.keychain.models import CustomerKey, ImportToken, Origin

READERS = [Role.KEY_ADMIN, Role.TENANT_ADMIN, Role.AUDITOR]
ADMIN = [Role.KEY_ADMIN]


def _wizard_url(key_id: UUID) -> str:
    return reverse("console:byok-wizard", args=[key_id])


def _byok_key(key_id: UUID) -> CustomerKey:
    l1 = CustomerKey.objects.select_related("tenant_key").filter(pk=key_id).first()
    if l1 is None or l1.origin != Origin.BYOK:
        raise Http404
    return l1


@console_view(ADMIN)
@require_POST
def byok_create(request: HttpRequest) -> HttpResponse:
    form = ByokKeyForm(request.POST)
    if not form.is_valid():
        return run_action(
            request, invalid_form(form), "", reverse("console:keys"), audit_action="key.create"
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
    tokens = selectors.open_import_tokens(l1)
    can_manage = Role.KEY_ADMIN in request.kcm_principal.roles  # type: ignore[attr-defined]
    return render(
        request,
        "keychain/byok_wizard.html",
        {
            "key": selectors.customer_key_material(l1),
            "can_manage": can_manage,
            "tokens": [{"id": t.pk, **selectors.import_parameters(t)} for t in tokens]
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
            request,
            invalid_form(form),
            "",
            _wizard_url(key_id),
            audit_action="key.import_parameters",
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
    parameters = selectors.import_parameters(_token(key_id, import_token_id))
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
            request, invalid_form(form), "", _wizard_url(key_id), audit_action="key.import"
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
            f"{version.key_check_value} (classic, AES-ECB), CMAC check value "
            f"{version.key_check_value_cmac}: compare one with yours."
        ),
        _wizard_url(key_id),
        audit_action="key.import",
    )


@console_view(ADMIN)
@require_POST
def byok_delete_material(request: HttpRequest, key_id: UUID) -> HttpResponse:
    gated = console_gate(
        request,
        action="key.import_delete",
        target=str(key_id),
        params={},
        next_url=_wizard_url(key_id),
    )
    if gated is not None:
        return gated
    return run_action(
        request,
        lambda: byok.material_delete(key_id=key_id),
        "Imported material deleted; import the same material to restore the key.",
        _wizard_url(key_id),
        audit_action="key.import_delete",
    )
