"""URL patterns served on every host: the API schema and its interactive docs (/healthz and
/readyz are answered before routing, by kms_project.health.ProbeMiddleware)."""

from typing import Any

from django.urls import path
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.request import Request
from rest_framework.response import Response


class HostSchemaView(SpectacularAPIView):
    """The schema of the API this host serves: the platform's on the base domain, a tenant's
    on a tenant host (DRF would otherwise enumerate ROOT_URLCONF, the tenant URLs, on every
    host)."""

    @extend_schema(exclude=True)  # as SpectacularAPIView's own get (SERVE_INCLUDE_SCHEMA)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        self.urlconf = getattr(request._request, "urlconf", None) or self.urlconf
        return super().get(request, *args, **kwargs)


urlpatterns = [
    path("api/schema/", HostSchemaView.as_view(), name="api-schema"),
    # Split: the page loads its settings as a script of ours, so the CSP needs no inline code.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="api-schema", template_name="api_docs.html"),
        name="api-docs",
    ),
]

handler400 = "apps.core.views.bad_request"
handler403 = "apps.core.views.forbidden"
handler404 = "apps.core.views.not_found"
handler500 = "apps.core.views.server_error"
