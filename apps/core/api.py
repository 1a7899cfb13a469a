"""Building blocks every API view uses: strict input parsing and the principal."""

from __future__ import annotations

from typing import Any, TypeVar

from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.tenants.access import Principal

# JSON types each kind of field accepts; DRF itself would coerce 7 into "7" and "7" into 7.
_JSON_TYPES: list[tuple[type[serializers.Field], tuple[type, ...]]] = [
    (serializers.BooleanField, (bool,)),
    (serializers.IntegerField, (int,)),
    (serializers.CharField, (str,)),
    (serializers.ChoiceField, (str,)),
    (serializers.DateTimeField, (str,)),
    (serializers.UUIDField, (str,)),
    (serializers.ListField, (list,)),
]


class StrictSerializer(serializers.Serializer):
    """Rejects unknown fields, wrongly typed values and non-object bodies instead of silently
    ignoring or coercing them."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            errors: dict[str, list[str]] = {
                name: ["Unknown field."] for name in sorted(set(data) - set(self.fields))
            }
            for name, value in data.items():
                field = self.fields.get(name)
                if field is None or value is None:
                    continue
                for field_type, json_types in _JSON_TYPES:
                    if isinstance(field, field_type):
                        if not isinstance(value, json_types) or (
                            isinstance(value, bool) and bool not in json_types
                        ):
                            errors[name] = [f"Must be a JSON {json_types[0].__name__}."]
                        break
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


S = TypeVar("S", bound=serializers.Serializer)


def parse(serializer_class: type[S], request: Request, **kwargs: Any) -> dict[str, Any]:
    """Validate the request body with `serializer_class`; raise a 400 problem otherwise."""
    serializer = serializer_class(data=request.data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def principal_of(request: Request) -> Principal:
    principal = request.auth
    assert isinstance(principal, Principal)  # guaranteed by HasTenantRole
    return principal


class KcmAPIView(APIView):
    """Base of every API view: records the request in the audit log.

    Denied and failed requests are always recorded (action `audit_action`, or `api.request`
    for views without one). Successes are recorded here only for views that set
    `audit_success_here` (cryptographic operations, exports); lifecycle services record their
    own successes inside their transactions.
    """

    audit_action: str = ""
    audit_actions: dict[str, str] = {}  # per HTTP method, overriding audit_action
    audit_success_here: bool = False

    def audit_target(self, request: Request, response: Response) -> tuple[str, int | None]:
        """(target, version) for the event; by default the URL's identifying argument."""
        for name in ("key_id", "name", "slug", "token_id", "membership_id", "job_id"):
            if name in self.kwargs:
                return str(self.kwargs[name]), None
        return "", None

    def audit_details(self, request: Request, response: Response) -> dict[str, Any]:
        return {}

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        status = response.status_code
        action = self.audit_actions.get(request.method or "", self.audit_action)
        if status < 400 and not (self.audit_success_here and action):
            return response
        from apps.audit.models import Outcome
        from apps.audit.services import audit_record

        if status < 400:
            outcome, code = Outcome.SUCCESS, ""
        else:
            data = response.data if isinstance(response.data, dict) else {}
            code = str(data.get("code", status))
            outcome = Outcome.DENIED if status in (401, 403) else Outcome.ERROR
        target, version = self.audit_target(request, response)
        audit_record(
            action=action or "api.request",
            outcome=outcome,
            target=target,
            target_version=version,
            error_code=code,
            details={
                "method": request.method,
                "path": request.path,
                **self.audit_details(request, response),
            },
            chained=False,  # committed before the response leaves; chained moments later
        )
        return response
