from django.urls import path

from apps.audit import api, api_sinks

urlpatterns = [
    path("audit/events/", api.EventListView.as_view(), name="audit-events"),
    path("audit/verify/", api.VerifyView.as_view(), name="audit-verify"),
    path("audit/public-key/", api.PublicKeyView.as_view(), name="audit-public-key"),
    path("audit/sinks/", api_sinks.SinkListView.as_view(), name="audit-sinks"),
    path("audit/sinks/<uuid:sink_id>/", api_sinks.SinkDetailView.as_view(), name="audit-sink"),
    path("audit/exports/", api.ExportListView.as_view(), name="audit-exports"),
    path("audit/exports/<uuid:export_id>/", api.ExportDetailView.as_view(), name="audit-export"),
    path(
        "audit/exports/<uuid:export_id>/download/",
        api.ExportDownloadView.as_view(),
        name="audit-export-download",
    ),
    path(
        "audit/exports/<uuid:export_id>/manifest/",
        api.ExportManifestView.as_view(),
        name="audit-export-manifest",
    ),
]
