"""Building blocks every API view uses: strict input parsing and the principal."""

from __future__ import annotations

from typing import Any, TypeVar

from rest_framework import serializers
from rest_framework.request import Request

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
