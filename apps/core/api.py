"""Building blocks every API view uses: strict input parsing, the principal, and recording
each request's outcome (through `request_outcome`, which apps.audit receives)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from django.core import validators as django_validators
from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.validators import ProhibitSurrogateCharactersValidator
from rest_framework.views import APIView

from apps.core.schema import KcmAutoSchema
from apps.core.signals import Outcome, request_outcome_send
from apps.core.tenancy import Principal
from apps.core.throttling import AddressRateThrottle

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

    rejects_unknown_fields = True  # the API schema says so (apps.core.schema)

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


class EmptyIn(StrictSerializer):
    """The body of an action that takes no parameters: ``{}`` (anything else is refused)."""


def parse(serializer_class: type[S], request: Request, **kwargs: Any) -> dict[str, Any]:
    """Validate the request body with `serializer_class`; raise a 400 problem otherwise."""
    data = request.data
    check = None if kwargs else fast_check(serializer_class)
    if check is not None:
        checked = check(data)
        if checked is not None:
            return checked
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


# --- the fast path of parse() --------------------------------------------------------------
# Building a DRF serializer deep-copies its fields, and a data-key request does little else,
# so for serializers made only of plain fields, parse() first checks the body directly. The
# check accepts only what the serializer would accept, giving the same validated data; for
# anything else it returns None and the serializer runs, so errors always come from DRF.
# tests/core/test_fast_parse.py holds the two to the same answers.

_CHAR_VALIDATORS = (
    django_validators.MaxLengthValidator,
    django_validators.MinLengthValidator,
    django_validators.ProhibitNullCharactersValidator,
    ProhibitSurrogateCharactersValidator,
)
Check = Callable[[Any], "dict[str, Any] | None"]
FieldCheck = Callable[[Any], Any]
_INVALID = object()


def _char_check(field: serializers.CharField) -> FieldCheck | None:
    if any(not isinstance(v, _CHAR_VALIDATORS) for v in field.validators):
        return None
    longest, shortest = field.max_length, field.min_length
    trim, allow_blank = field.trim_whitespace, field.allow_blank

    def check(value: Any) -> Any:
        # ASCII only: the serializer's surrogate check needs nothing more, and NUL is refused.
        if type(value) is not str or not value.isascii() or "\x00" in value:
            return _INVALID
        if trim:
            value = value.strip()
        if (not value and not allow_blank) or (longest is not None and len(value) > longest):
            return _INVALID
        if shortest is not None and len(value) < shortest:
            return _INVALID
        return value

    return check


def _bool_check(value: Any) -> Any:
    return value if type(value) is bool else _INVALID


def _json_check(value: Any) -> Any:
    # The body was parsed from JSON, so every value in it is JSON already; DRF only checks that.
    return value


def _field_check(field: serializers.Field) -> FieldCheck | None:
    kind = type(field)
    if field.read_only or field.source not in (None, field.field_name) or field.allow_null:
        return None
    if isinstance(field, serializers.CharField) and kind is serializers.CharField:
        return _char_check(field)
    if kind is serializers.BooleanField and not field.validators:
        return _bool_check
    if (
        isinstance(field, serializers.JSONField)
        and not field.validators
        and not field.binary
        and kind.to_internal_value is serializers.JSONField.to_internal_value
    ):
        return _json_check
    return None


@cache
def fast_check(serializer_class: type[serializers.Serializer]) -> Check | None:
    """A direct check equivalent to `serializer_class`, if all its fields are plain ones."""
    plain = (
        issubclass(serializer_class, StrictSerializer)
        and serializer_class.validate is serializers.Serializer.validate
        and serializer_class.to_internal_value is StrictSerializer.to_internal_value
        and serializer_class.run_validation is serializers.Serializer.run_validation
    )
    if not plain:
        return None
    try:
        sample = serializer_class()
    except TypeError:  # needs arguments: not a plain serializer
        return None
    if sample.validators:
        return None
    plan: list[tuple[str, FieldCheck, bool, Any]] = []
    for name, field in sample.fields.items():
        if hasattr(serializer_class, f"validate_{name}"):
            return None
        check = _field_check(field)
        default = field.default
        if check is None or (default is not empty and callable(default)):
            return None
        plan.append((name, check, field.required, default))
    names = frozenset(name for name, *_ in plan)

    def fast(data: Any) -> dict[str, Any] | None:
        if type(data) is not dict or not data.keys() <= names:
            return None
        out: dict[str, Any] = {}
        for name, check, required, default in plan:
            if name in data:
                value = check(data[name])
                if value is _INVALID or value is None:  # no field here allows null
                    return None
                out[name] = value
            elif required:
                return None
            elif default is not empty:
                out[name] = default
        return out

    return fast


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

    schema = KcmAutoSchema()  # documents the problem+json refusals too
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

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # The address limit comes before authentication, so that guessing tokens counts too;
        # the per-token limit (DEFAULT_THROTTLE_CLASSES) follows it, as DRF orders them.
        address = AddressRateThrottle()
        if not address.allow_request(request, self):
            self.throttled(request, address.wait() or 1)
        super().initial(request, *args, **kwargs)

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        status = response.status_code
        action = self.audit_actions.get(request.method or "", self.audit_action)
        if status < 400 and not (self.audit_success_here and action):
            return response
        outcome: Outcome = "success"
        code = ""
        if status >= 400:
            data = response.data if isinstance(response.data, dict) else {}
            code = str(data.get("code", status))
            outcome = "denied" if status in (401, 403) else "error"
        target, version = self.audit_target(request, response)
        request_outcome_send(
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
