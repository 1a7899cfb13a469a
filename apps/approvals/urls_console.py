from django.urls import path

from apps.approvals import views

urlpatterns = [
    path("", views.index, name="approvals"),
    path("<uuid:request_id>/<str:action>/", views.decide, name="approval-decide"),
]
