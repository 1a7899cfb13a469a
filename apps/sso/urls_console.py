from django.urls import path

from apps.sso import views

urlpatterns = [
    path("", views.sso_settings, name="sso-settings"),
    # Public: the sign-in round trip, for people who are not signed in yet.
    path("login/", views.sso_login, name="sso-login"),
    path("callback/", views.sso_callback, name="sso-callback"),
]
