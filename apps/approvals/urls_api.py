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
        for action in ("approve", "deny", "withdraw")
    ],
]
