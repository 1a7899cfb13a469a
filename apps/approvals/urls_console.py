from django.urls import path

from apps.approvals import views

urlpatterns = [
    path("", views.index, name="approvals"),
    path("policy/", views.policy_set, name="approval-policy"),
    path("<uuid:request_id>/<str:action>/", views.decide, name="approval-decide"),
]

# Mounted on the platform console (kms_project.urls_public): the same page and buttons.
platform_urlpatterns = [
    path("", views.platform_index, name="approvals"),
    path("<uuid:request_id>/<str:action>/", views.platform_decide, name="approval-decide"),
]
