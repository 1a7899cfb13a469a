"""Rotation API: start rotations, follow, cancel and resume their jobs, and set policies.
Platform-wide rotations live on the base domain (PlatformRotation* views)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import EmptyIn, KcmAPIView, StrictSerializer, parse, principal_of
from apps.core.approvals import approval_gate
from apps.core.errors import ValidationFailed
from apps.core.roles import Role
from apps.keychain.api import KEY_ADMIN, KEY_READERS, key_body
from apps.rotation import policies, selectors, services, sweep
from apps.rotation.models import JobState, PolicyLevel
from apps.rotation.platform.models import PlatformRotation

PLATFORM = frozenset({Role.PLATFORM_OPERATOR})


class RotateIn(StrictSerializer):
    dry_run = serializers.BooleanField(required=False, default=False)


class PolicyIn(StrictSerializer):
    period_days = serializers.IntegerField(required=False, allow_null=True)
    max_usage = serializers.IntegerField(required=False, allow_null=True)


class DefaultIn(PolicyIn):
    level = serializers.ChoiceField(choices=PolicyLevel.values)


class PlatformRotateIn(StrictSerializer):
    level = serializers.ChoiceField(choices=["L1", "L2"])
    dry_run = serializers.BooleanField(required=False, default=False)


def rotation_body(rotation: services.Rotation) -> dict[str, Any]:
    key = rotation.key
    return {
        "key": {"id": str(key.pk), "level": key.level, "primary_version": key.primary_version},
        "job": selectors.job_detail(rotation.job) if rotation.job else None,
    }


def _gate(request: Request, key_id: UUID) -> dict[str, Any] | None:
    """The approval request a rotation becomes when the tenant's policy gates it, or None."""
    return approval_gate(
        principal=principal_of(request), action="key.rotate", target=str(key_id), params={}
    )


class KeyRotateView(KcmAPIView):
    """Rotate a key now. For an L1 or L2 this queues the rewrap job that moves its children
    (202, with the job); an L3's children are data keys held by their owners (200, no job).
    `dry_run`: rotate nothing; the job only checks and reports what would be rewrapped."""

    allowed_roles = KEY_ADMIN
    audit_action = "key.rotate"

    @extend_schema(
        request=RotateIn,
        responses={
            202: OpenApiResponse(description="Key and the rewrap job"),
            200: OpenApiResponse(description="Key (nothing to rewrap, or a dry run)"),
        },
    )
    def post(self, request: Request, key_id: UUID) -> Response:
        data = parse(RotateIn, request)
        if not data["dry_run"]:
            pending = _gate(request, key_id)
            if pending is not None:
                return Response(pending, status=status.HTTP_202_ACCEPTED)
        rotation = services.rotation_start(key_id=key_id, dry_run=data["dry_run"])
        return Response(
            rotation_body(rotation),
            status=status.HTTP_202_ACCEPTED if rotation.job else status.HTTP_200_OK,
        )


class ChainKeyRotateView(KcmAPIView):
    """POST /keys/<id>/rotate/, the key chain's rotate action: rotate now (an L1's or L2's
    rewrap job is queued, as by KeyRotateView) and answer with the key alone."""

    allowed_roles = KEY_ADMIN
    audit_action = "key.rotate"

    @extend_schema(
        request=EmptyIn,
        responses={
            200: OpenApiResponse(description="The key"),
            202: OpenApiResponse(description="The approval request the rotation became"),
        },
    )
    def post(self, request: Request, key_id: UUID) -> Response:
        parse(EmptyIn, request)
        pending = _gate(request, key_id)
        if pending is not None:
            return Response(pending, status=status.HTTP_202_ACCEPTED)
        return Response(key_body(services.key_rotate_with_rewrap(key_id=key_id)))


class KeyRewrapView(KcmAPIView):
    """Move an L1's or L2's children under its current primary version, without rotating
    (after a BYOK import or HYOK link added the version, or to finish a cancelled rotation)."""

    allowed_roles = KEY_ADMIN
    audit_action = "rotation.job.start"

    @extend_schema(request=EmptyIn, responses={202: OpenApiResponse(description="The job")})
    def post(self, request: Request, key_id: UUID) -> Response:
        parse(EmptyIn, request)
        job = services.rewrap_start(key_id=key_id)
        return Response(selectors.job_detail(job), status=status.HTTP_202_ACCEPTED)


class JobListView(KcmAPIView):
    """Recent rewrap jobs, newest first (`?key_id=`, `?state=` filter)."""

    allowed_roles = KEY_READERS

    @extend_schema(responses=OpenApiResponse(description="Jobs"))
    def get(self, request: Request) -> Response:
        key_id = request.query_params.get("key_id")
        state = request.query_params.get("state")
        if state is not None and state not in JobState.values:
            raise ValidationFailed(
                f"state must be one of {', '.join(JobState.values)}.", code="invalid_state"
            )
        if key_id is not None:
            try:
                key_id = str(UUID(key_id))
            except ValueError:
                raise ValidationFailed("key_id must be a UUID.", code="invalid_key_id") from None
        return Response({"results": selectors.job_list(key_id=key_id, state=state)})


class JobDetailView(KcmAPIView):
    """One job: state, counts, rate, ETA, errors (what the console's progress bar polls)."""

    allowed_roles = KEY_READERS

    @extend_schema(responses=OpenApiResponse(description="The job"))
    def get(self, request: Request, job_id: UUID) -> Response:
        return Response(selectors.job_detail(selectors.job_get(job_id=job_id)))


class JobActionView(KcmAPIView):
    """POST /rotation/jobs/<id>/cancel/ or /resume/."""

    allowed_roles = KEY_ADMIN
    action: str = ""

    @property
    def audit_action(self) -> str:  # type: ignore[override]
        return f"rotation.job.{self.action}"

    @extend_schema(request=EmptyIn, responses=OpenApiResponse(description="The job"))
    def post(self, request: Request, job_id: UUID) -> Response:
        parse(EmptyIn, request)
        act = {"cancel": services.rewrap_job_cancel, "resume": services.rewrap_job_resume}
        job = act[self.action](job_id=job_id)
        return Response(selectors.job_detail(job))


class KeyPolicyView(KcmAPIView):
    """A key's rotation policy: its own, the tenant default, the effective one, next due."""

    method_roles = {"GET": KEY_READERS, "PUT": KEY_ADMIN, "DELETE": KEY_ADMIN}
    allowed_roles = KEY_READERS | KEY_ADMIN
    audit_actions = {"PUT": "rotation.policy.set", "DELETE": "rotation.policy.clear"}

    @extend_schema(responses=OpenApiResponse(description="The policy"))
    def get(self, request: Request, key_id: UUID) -> Response:
        return Response(selectors.key_policy(key_id=key_id))

    @extend_schema(request=PolicyIn, responses=OpenApiResponse(description="The policy"))
    def put(self, request: Request, key_id: UUID) -> Response:
        data = parse(PolicyIn, request)
        policies.rotation_policy_set(
            key_id=key_id,
            period_days=data.get("period_days"),
            max_usage=data.get("max_usage"),
        )
        return Response(selectors.key_policy(key_id=key_id))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, key_id: UUID) -> Response:
        policies.rotation_policy_clear(key_id=key_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DefaultsView(KcmAPIView):
    """The tenant's default policy per level. PUT one level; nulls for both fields clear it."""

    method_roles = {"GET": KEY_READERS, "PUT": KEY_ADMIN}
    allowed_roles = KEY_READERS | KEY_ADMIN
    audit_actions = {"PUT": "rotation.policy.set"}

    @extend_schema(responses=OpenApiResponse(description="Defaults per level"))
    def get(self, request: Request) -> Response:
        return Response(selectors.rotation_defaults())

    @extend_schema(request=DefaultIn, responses=OpenApiResponse(description="Defaults"))
    def put(self, request: Request) -> Response:
        data = parse(DefaultIn, request)
        period, max_usage = data.get("period_days"), data.get("max_usage")
        if period is None and max_usage is None:
            policies.rotation_default_clear(level=data["level"])
        else:
            policies.rotation_default_set(
                level=data["level"], period_days=period, max_usage=max_usage
            )
        return Response(selectors.rotation_defaults())


# --- platform (base domain) -------------------------------------------------------------------


class PlatformRotationListView(KcmAPIView):
    """Rotate one level in every active tenant (202), or list recent platform rotations."""

    allowed_roles = PLATFORM
    audit_actions = {"POST": "rotation.platform.start"}

    @extend_schema(responses=OpenApiResponse(description="Recent runs"))
    def get(self, request: Request) -> Response:
        runs = PlatformRotation.objects.order_by("-created_at")[:20]
        return Response({"results": [sweep.platform_run_detail(run) for run in runs]})

    @extend_schema(request=PlatformRotateIn, responses={202: OpenApiResponse(description="Run")})
    def post(self, request: Request) -> Response:
        data = parse(PlatformRotateIn, request)
        run = sweep.platform_rotation_start(level=data["level"], dry_run=data["dry_run"])
        return Response(sweep.platform_run_detail(run), status=status.HTTP_202_ACCEPTED)


class PlatformRotationDetailView(KcmAPIView):
    """A platform rotation with its jobs' progress summed over all tenants."""

    allowed_roles = PLATFORM

    @extend_schema(responses=OpenApiResponse(description="The run"))
    def get(self, request: Request, run_id: UUID) -> Response:
        return Response(sweep.platform_run_detail(sweep.platform_run_get(run_id=run_id)))
