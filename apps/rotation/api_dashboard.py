"""GET /api/v1/dashboard/: what the console's dashboard draws, for readers of the key chain.

The serializers below only describe the response in the OpenAPI schema; the body is the
selector's dict (apps.rotation.dashboard), rendered as it is."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import KcmAPIView
from apps.keychain.api import KEY_READERS
from apps.rotation import dashboard


class SeriesOut(serializers.Serializer):
    service_key = serializers.CharField()
    counts = serializers.ListField(
        child=serializers.IntegerField(), help_text="Operations per bucket, oldest first."
    )


class OtherOut(serializers.Serializer):
    service_keys = serializers.IntegerField(help_text="How many keys beyond the busiest 10.")
    counts = serializers.ListField(child=serializers.IntegerField())


class WindowOut(serializers.Serializer):
    unit = serializers.ChoiceField(choices=["hour", "minute"])
    buckets = serializers.ListField(
        child=serializers.DateTimeField(),
        help_text="Start of each bucket (UTC), oldest first; the last one is still filling.",
    )
    series = SeriesOut(
        many=True,
        help_text="The 10 busiest service keys in the window, by name: successful data-key "
        "operations per bucket (a batch counts its items).",
    )
    other = OtherOut(help_text="The other service keys' operations, summed.")
    denied = serializers.ListField(
        child=serializers.IntegerField(), help_text="Refused requests (401/403) per bucket."
    )
    error = serializers.ListField(
        child=serializers.IntegerField(), help_text="Failed requests (other errors) per bucket."
    )


class OperationsOut(serializers.Serializer):
    day = WindowOut(help_text="The last 24 hours, per hour.")
    hour = WindowOut(help_text="The last hour, per minute.")


class DueOut(serializers.Serializer):
    key_id = serializers.UUIDField()
    level = serializers.ChoiceField(choices=["L1", "L2", "L3"])
    name = serializers.CharField()
    when = serializers.ChoiceField(
        choices=["due", "soon"], help_text="due: now; soon: by period within 7 days."
    )


class UsageVersionOut(serializers.Serializer):
    service_key = serializers.CharField()
    version = serializers.IntegerField()
    primary = serializers.BooleanField()
    state = serializers.CharField()
    used = serializers.IntegerField(help_text="Encryptions reserved under this version.")
    fraction = serializers.FloatField(help_text="used / limit")


class UsageOut(serializers.Serializer):
    limit = serializers.IntegerField(help_text="KCM_GCM_USAGE_LIMIT")
    safety_limit = serializers.IntegerField(help_text="Usage at which the sweep rotates.")
    versions = UsageVersionOut(many=True)


class ManagerOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    kind = serializers.CharField()
    keys_by_state = serializers.DictField(child=serializers.IntegerField())
    breaker = serializers.ChoiceField(
        choices=["open", "closed", "unknown"],
        help_text="This web process's circuit breaker; unknown until it has called the manager.",
    )
    healthy = serializers.BooleanField()


class JobOut(serializers.Serializer):
    id = serializers.UUIDField()
    level = serializers.CharField()
    key_name = serializers.CharField()
    state = serializers.CharField()
    total = serializers.IntegerField()
    done = serializers.IntegerField()
    failed = serializers.IntegerField()
    progress = serializers.FloatField()
    eta_seconds = serializers.FloatField(allow_null=True)


class DashboardEventOut(serializers.Serializer):
    seq = serializers.IntegerField()
    occurred_at = serializers.DateTimeField()
    action = serializers.CharField()
    target = serializers.CharField()
    outcome = serializers.CharField()
    error_code = serializers.CharField()
    actor = serializers.CharField()


class DashboardOut(serializers.Serializer):
    generated_at = serializers.DateTimeField()
    operations = OperationsOut()
    rotations_due = DueOut(many=True)
    gcm_usage = UsageOut()
    key_managers = ManagerOut(many=True)
    running_jobs = JobOut(many=True, help_text="Queued and running rewrap jobs (full job body).")
    recent_events = DashboardEventOut(
        many=True, help_text="The 10 newest audit events, without details or contexts."
    )


class DashboardView(KcmAPIView):
    """The tenant dashboard's data: data-key operations per service key (last 24 h per hour,
    last hour per minute) counted from the audit log, refused requests, keys due for rotation,
    GCM usage per service-key version, key-manager health, running rewrap jobs and the newest
    audit events."""

    allowed_roles = KEY_READERS

    @extend_schema(responses=DashboardOut)
    def get(self, request: Request) -> Response:
        return Response(dashboard.dashboard())
