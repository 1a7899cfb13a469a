from django.urls import path

from apps.approvals import views

urlpatterns = [
    path("", views.index, name="approvals"),
    path("policy/", views.policy_set, name="approval-policy"),
    path("<uuid:request_id>/<str:action>/", views.decide, name="approval-decide"),
]
