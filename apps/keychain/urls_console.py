from django.urls import path

from apps.keychain import views, views_byok

urlpatterns = [
    path("", views.chain, name="keys"),
    path("customer-keys/new/", views.customer_key_create, name="customer-key-create"),
    path("service-keys/new/", views.service_key_create, name="service-key-create"),
    # BYOK wizard and HYOK sync: before key-action, which takes any action.
    path("byok/new/", views_byok.byok_create, name="byok-create"),
    path("<uuid:key_id>/byok/", views_byok.byok_wizard, name="byok-wizard"),
    path("<uuid:key_id>/byok/parameters/", views_byok.byok_parameters, name="byok-parameters"),
    path("<uuid:key_id>/byok/import/", views_byok.byok_import, name="byok-import"),
    path(
        "<uuid:key_id>/byok/delete-material/",
        views_byok.byok_delete_material,
        name="byok-delete-material",
    ),
    path(
        "<uuid:key_id>/byok/tokens/<uuid:import_token_id>/public-key.pem",
        views_byok.byok_public_key,
        name="byok-public-key",
    ),
    path(
        "<uuid:key_id>/byok/tokens/<uuid:import_token_id>/import-token.txt",
        views_byok.byok_token_file,
        name="byok-token",
    ),
    path("<uuid:key_id>/hyok/sync/", views.hyok_sync, name="hyok-sync"),
    path(
        "<uuid:key_id>/versions/<int:version>/<str:action>/",
        views.key_version_action,
        name="key-version-action",
    ),
    path("<uuid:key_id>/<str:action>/", views.key_action, name="key-action"),
]
