from django.urls import path

from apps.keychain import api, api_byok, api_hyok, services

# keys/<id>/rotate/ is apps/rotation's (urls_api): rotating queues the rewrap.
ACTIONS = (*services.LIFECYCLE_ACTIONS, "schedule-deletion")

urlpatterns = [
    path("keys/", api.ChainView.as_view(), name="keys"),
    path("customer-keys/", api.CustomerKeyCreateView.as_view(), name="customer-keys"),
    *[
        path(
            f"keys/<uuid:key_id>/{action}/",
            api.KeyActionView.as_view(action=action),
            name=f"key-{action}",
        )
        for action in ACTIONS
    ],
    *[
        path(
            f"keys/<uuid:key_id>/versions/<int:version>/{action}/",
            api.KeyVersionActionView.as_view(action=action),
            name=f"key-version-{action}",
        )
        for action in ("schedule-deletion", "cancel-deletion")
    ],
    path("service-keys/", api.ServiceKeyListView.as_view(), name="service-keys"),
    path("service-keys/<slug:name>/", api.ServiceKeyDetailView.as_view(), name="service-key"),
    *[
        path(
            f"service-keys/<slug:name>/{operation}/",
            api.CryptoView.as_view(operation=operation),
            name=f"service-key-{operation}",
        )
        for operation in api._INPUTS
    ],
    *[
        path(
            f"service-keys/<slug:name>/{operation}/batch/",
            api.CryptoBatchView.as_view(operation=operation),
            name=f"service-key-{operation}-batch",
        )
        for operation in api._INPUTS
    ],
    # Customer-controlled L1s: BYOK and HYOK.
    path("customer-keys/byok/", api_byok.ByokKeyCreateView.as_view(), name="customer-keys-byok"),
    path("customer-keys/hyok/", api_hyok.HyokKeyCreateView.as_view(), name="customer-keys-hyok"),
    *[
        path(f"keys/<uuid:key_id>/{action}/", view.as_view(), name=f"key-{action}")
        for action, view in (
            ("material", api.KeyMaterialView),
            ("import-parameters", api_byok.ImportParametersView),
            ("import", api_byok.ImportView),
            ("delete-imported-material", api_byok.DeleteImportedMaterialView),
            ("link", api_hyok.LinkView),
            ("sync", api_hyok.SyncView),
        )
    ],
    path("key-managers/", api_hyok.KeyManagerListView.as_view(), name="key-managers"),
    path(
        "key-managers/<uuid:manager_id>/",
        api_hyok.KeyManagerDetailView.as_view(),
        name="key-manager",
    ),
]
