from django.urls import path

from apps.keychain import views

urlpatterns = [
    path("", views.chain, name="keys"),
    path("customer-keys/new/", views.customer_key_create, name="customer-key-create"),
    path("service-keys/new/", views.service_key_create, name="service-key-create"),
    path("<uuid:key_id>/<str:action>/", views.key_action, name="key-action"),
]
