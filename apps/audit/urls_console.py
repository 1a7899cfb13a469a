from django.urls import path

from apps.audit import views

urlpatterns = [
    path("", views.events, name="audit-events"),
    path("verify/", views.verify, name="audit-verify"),
    path("exports/new/", views.export_create, name="audit-export-create"),
    path("exports/<uuid:export_id>/", views.export_detail, name="audit-export"),
]
