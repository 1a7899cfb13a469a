from django.urls import path

from apps.rotation import api, api_dashboard

urlpatterns = [
    path("dashboard/", api_dashboard.DashboardView.as_view(), name="dashboard"),
    # The key chain's rotate action, at the chain's URL; rotation owns it (it queues the rewrap).
    path("keys/<uuid:key_id>/rotate/", api.ChainKeyRotateView.as_view(), name="key-rotate"),
    path(
        "rotation/keys/<uuid:key_id>/rotate/", api.KeyRotateView.as_view(), name="rotation-rotate"
    ),
    path(
        "rotation/keys/<uuid:key_id>/rewrap/", api.KeyRewrapView.as_view(), name="rotation-rewrap"
    ),
    path(
        "rotation/keys/<uuid:key_id>/policy/", api.KeyPolicyView.as_view(), name="rotation-policy"
    ),
    path("rotation/defaults/", api.DefaultsView.as_view(), name="rotation-defaults"),
    path("rotation/jobs/", api.JobListView.as_view(), name="rotation-jobs"),
    path("rotation/jobs/<uuid:job_id>/", api.JobDetailView.as_view(), name="rotation-job"),
    *[
        path(
            f"rotation/jobs/<uuid:job_id>/{action}/",
            api.JobActionView.as_view(action=action),
            name=f"rotation-job-{action}",
        )
        for action in ("cancel", "resume")
    ],
]
