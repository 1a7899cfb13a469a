from django.urls import path

from apps.mfa import api

urlpatterns = [
    path("mfa/policy/", api.MfaPolicyView.as_view(), name="mfa-policy"),
]
