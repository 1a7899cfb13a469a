from django.urls import path

from apps.keychain import api

ACTIONS = ("enable", "disable", "rotate", "schedule-deletion", "cancel-deletion")

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
]
