from django.urls import path

from apps.approvals import api

urlpatterns = [
    path("approvals/", api.ApprovalListView.as_view(), name="approvals"),
    path("approvals/policy/", api.ApprovalPolicyView.as_view(), name="approval-policy"),
    path("approvals/<uuid:request_id>/", api.ApprovalDetailView.as_view(), name="approval"),
    *[
        path(
            f"approvals/<uuid:request_id>/{action}/",
            api.ApprovalActionView.as_view(action=action),
            name=f"approval-{action}",
        )
        for action in api.DECISIONS
    ],
]

# Mounted on the base domain (kms_project.urls_public): the platform's requests.
platform_urlpatterns = [
    path("platform/approvals/", api.PlatformApprovalListView.as_view(), name="platform-approvals"),
    path(
        "platform/approvals/policy/",
        api.PlatformApprovalPolicyView.as_view(),
        name="platform-approval-policy",
    ),
    path(
        "platform/approvals/<uuid:request_id>/",
        api.PlatformApprovalDetailView.as_view(),
        name="platform-approval",
    ),
    *[
        path(
            f"platform/approvals/<uuid:request_id>/{action}/",
            api.PlatformApprovalActionView.as_view(action=action),
            name=f"platform-approval-{action}",
        )
        for action in api.DECISIONS
    ],
]
