"""parse()'s fast path gives exactly the serializer's answer, or steps aside.

For every strict serializer the API uses, a corpus of bodies (valid, wrong types, null,
blank, padded, too long, NUL, non-ASCII, surrogates, missing and unknown fields) is checked
both ways: where the fast check answers, the serializer accepts the same body with the same
validated data; where the serializer refuses, the fast check does not answer.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from django.urls import get_resolver
from rest_framework import serializers

from apps.core.api import StrictSerializer, fast_check

MISSING = object()


def _strict_serializers() -> list[type[StrictSerializer]]:
    get_resolver().url_patterns  # noqa: B018 - imports every view, hence every serializer
    found: list[type[StrictSerializer]] = []
    todo = list(StrictSerializer.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(set(found), key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


def _candidates(field: serializers.Field) -> list[Any]:
    common: list[Any] = [MISSING, None, 7, 1.5, True, [], {}, ["a"]]
    if isinstance(field, serializers.CharField):
        longest = field.max_length or 50
        return [
            *common, "", "   ", "abc", "  padded\t", "a\x00b", "é", "\ud800", "x" * longest,
            "x" * (longest + 1), " " + "x" * longest + " ",
        ]  # fmt: skip
    if isinstance(field, serializers.BooleanField):
        return [*common, False, "true", 1, 0]
    if isinstance(field, serializers.JSONField):
        return [*common, {"a": "b"}, {"a": 1}, "text", {"nested": {"x": [1, None]}}]
    return common


# The others (integers, choices, lists, ...) are always validated by the serializer.
PLAIN = [cls for cls in _strict_serializers() if fast_check(cls) is not None]


@pytest.mark.parametrize("serializer_class", PLAIN, ids=lambda cls: cls.__name__)
def test_the_fast_check_agrees_with_the_serializer(
    serializer_class: type[StrictSerializer],
) -> None:
    check = fast_check(serializer_class)
    assert check is not None
    fields = serializer_class().fields
    choices = [_candidates(field) for field in fields.values()]
    combos = list(itertools.product(*choices))
    random.Random(1).shuffle(combos)
    bodies: list[Any] = [None, [], "text", 7, {"surely_not_a_field": 1}]
    for combo in combos[:3000]:
        bodies.append({n: v for n, v in zip(fields, combo, strict=True) if v is not MISSING})
    bodies += [{**body, "unknown": 1} for body in bodies[5:50] if isinstance(body, dict)]
    answered = 0
    for body in bodies:
        fast = check(body)
        serializer = serializer_class(data=body)
        valid = serializer.is_valid()
        if fast is not None:
            answered += 1
            assert valid, (body, serializer.errors)
            assert fast == dict(serializer.validated_data), body
        # Otherwise the fast check stepped aside, which is always allowed: the serializer answers.
    assert answered > 0


def test_the_data_key_inputs_take_the_fast_path() -> None:
    from apps.keychain.api import _INPUTS

    for serializer_class in set(_INPUTS.values()):
        assert fast_check(serializer_class) is not None, serializer_class.__name__
    check = fast_check(_INPUTS["generate-data-key"])
    assert check is not None
    assert check({"context": {"app": "x"}}) == {"context": {"app": "x"}, "include_plaintext": True}
    check = fast_check(_INPUTS["decrypt-data-key"])
    assert check is not None
    assert check({"ciphertext": " abc "}) == {"ciphertext": "abc"}
    assert check({"ciphertext": "abc", "context": None}) is None
