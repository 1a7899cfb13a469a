from django.urls import path

from apps.rotation import api

urlpatterns = [
    path(
        "platform/rotations/",
        api.PlatformRotationListView.as_view(),
        name="platform-rotations",
    ),
    path(
        "platform/rotations/<uuid:run_id>/",
        api.PlatformRotationDetailView.as_view(),
        name="platform-rotation",
    ),
]
