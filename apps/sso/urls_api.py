from django.urls import path

from apps.sso import api

urlpatterns = [path("sso/", api.ProviderView.as_view(), name="sso")]
