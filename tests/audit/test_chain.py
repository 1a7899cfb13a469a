"""The chain is append-only and tamper-evident: every kind of tampering is reported at the
first bad event, and the database itself refuses edits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.utils import DatabaseError
from django_tenants.utils import tenant_context

from apps.audit import chain, services
from apps.audit.context import AuditContext, reset_context, set_context
from apps.audit.models import AuditEvent, AuditPending, Outcome
from apps.audit.sealer import seal_here
from apps.tenants.models import Tenant


@pytest.fixture
def acme_log(world: Any) -> Iterator[None]:
    """Ten events and a signed checkpoint in acme's log."""
    with tenant_context(Tenant.objects.get(slug="acme")):
        for number in range(10):
            services.audit_record(action="test.event", target=f"t{number}", details={"n": number})
        services.checkpoint_create()
        yield


def _as_superuser_past_the_trigger(sql: str, params: list[Any] | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")  # triggers off
        cursor.execute(sql, params or [])
        cursor.execute("SET LOCAL session_replication_role = origin")


def _base() -> int:
    return int(AuditEvent.objects.order_by("seq").values_list("seq", flat=True).first() or 0)


def test_an_untouched_log_verifies(acme_log: None) -> None:
    report = services.audit_verify()
    assert report["ok"] and report["checked"] >= 10 and report["checkpoints"] == 1


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_auditevent SET actor = 'x'",
        "DELETE FROM audit_auditevent",
        "TRUNCATE audit_auditevent",
    ],
)
def test_the_database_refuses_edits(acme_log: None, statement: str) -> None:
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement)
    assert services.audit_verify()["ok"]


def test_an_edited_event_is_reported(acme_log: None) -> None:
    seq = _base() + 4
    _as_superuser_past_the_trigger(
        "UPDATE audit_auditevent SET target = 'forged' WHERE seq = %s", [seq]
    )
    report = services.audit_verify()
    assert (
        not report["ok"]
        and report["first_bad"]["seq"] == seq
        and "edited" in report["first_bad"]["reason"]
    )


def test_a_deleted_event_is_reported(acme_log: None) -> None:
    seq = _base() + 3
    _as_superuser_past_the_trigger("DELETE FROM audit_auditevent WHERE seq = %s", [seq])
    report = services.audit_verify()
    assert (
        not report["ok"]
        and report["first_bad"]["seq"] == seq
        and "missing" in report["first_bad"]["reason"]
    )


def test_reordered_events_are_reported(acme_log: None) -> None:
    a, b = _base() + 2, _base() + 5
    _as_superuser_past_the_trigger(
        "UPDATE audit_auditevent SET seq = CASE seq WHEN %s THEN -1 ELSE seq END WHERE seq = %s",
        [a, a],
    )
    _as_superuser_past_the_trigger("UPDATE audit_auditevent SET seq = %s WHERE seq = %s", [a, b])
    _as_superuser_past_the_trigger("UPDATE audit_auditevent SET seq = %s WHERE seq = -1", [b])
    report = services.audit_verify()
    assert not report["ok"] and report["first_bad"]["seq"] == a


def test_a_truncated_tail_is_reported(acme_log: None) -> None:
    head = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
    assert head is not None
    _as_superuser_past_the_trigger("DELETE FROM audit_auditevent WHERE seq > %s", [head - 3])
    report = services.audit_verify()
    assert not report["ok"] and report["first_bad"]["seq"] == head - 2
    assert "removed from the end" in report["first_bad"]["reason"]


def test_a_wholesale_rewrite_is_caught_by_the_signed_checkpoint(acme_log: None) -> None:
    from apps.audit import chain

    rows = list(AuditEvent.objects.order_by("seq").values())
    _as_superuser_past_the_trigger("DELETE FROM audit_auditevent")
    prev = rows[0]["prev_hash"]
    for row in rows:  # rewrite one field everywhere and recompute every hash consistently
        row["target"] = "rewritten"
        event = services.as_chain_dict(dict(row))
        row["prev_hash"], row["hash"] = (
            prev,
            chain.event_hash(prev, row["seq"], chain.canonical(event)),
        )
        prev = row["hash"]
        AuditEvent.objects.bulk_create([AuditEvent(**row)])
    report = services.audit_verify()
    assert not report["ok"] and "checkpoint" in report["first_bad"]["reason"]


def test_a_forged_checkpoint_signature_is_reported(acme_log: None) -> None:
    _as_superuser_past_the_trigger(
        "UPDATE audit_auditcheckpoint SET signature = %s", ["MEUCIQ" + "A" * 90]
    )
    report = services.audit_verify()
    assert not report["ok"] and "signature" in report["first_bad"]["reason"]


def test_pruning_archives_first_and_the_rest_still_verifies(
    acme_log: None, settings: Any, tmp_path: Any
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from apps.audit import retention

    settings.KCM_AUDIT_EXPORT_DIR = tmp_path
    settings.KCM_AUDIT_RETENTION_DAYS = 1
    before = AuditEvent.objects.count()
    result = retention.audit_prune(now=timezone.now() + timedelta(days=2))
    assert result["pruned"] == before - 1  # the newest event always stays
    assert (tmp_path / "t_acme" / f"{result['archive']}.jsonl").exists()
    services.audit_record(action="test.after_prune")
    report = services.audit_verify()
    assert report["ok"], report
    assert AuditEvent.objects.filter(action="audit.prune").exists()


def test_nothing_is_pruned_inside_the_retention_period(acme_log: None) -> None:
    from apps.audit import retention

    before = AuditEvent.objects.count()
    assert retention.audit_prune() == {"pruned": 0}
    assert AuditEvent.objects.count() == before


def test_events_are_stored_from_their_body_exactly_and_verify(world: Any) -> None:
    """An event is written as its canonical body alone and the seal fills every column from it:
    awkward values (NUL, non-ASCII, null IP and version, nested details) must come out as
    given, on the chained path and the pending one alike."""
    awkward: dict[str, Any] = {
        "target": "ключ/\x00≈",
        "details": {"context": {"a": "b\x00", "list": [1, 2.5, None, True]}, "path": "/x"},
    }
    fields = [name for name in chain.FIELDS if name != "occurred_at"]
    expected: list[dict[str, Any]] = []
    with tenant_context(Tenant.objects.get(slug="acme")):
        for ip, version in (("", None), ("2001:db8::1", 7)):
            context = AuditContext(
                actor="token:é", role="key_user", source_ip=ip, user_agent="ua\x00", request_id="r"
            )
            token = set_context(context)
            try:
                for action, chained in (("test.chained", True), ("test.pending", False)):
                    services.audit_record(
                        action=action, chained=chained, target_version=version, **awkward
                    )
                    expected.append(
                        {
                            "actor": "token:é",
                            "role": "key_user",
                            "source_ip": ip or None,
                            "user_agent": "ua\ufffd",
                            "request_id": "r",
                            "action": action,
                            "target": "ключ/\ufffd≈",
                            "target_version": version,
                            "outcome": "success",
                            "error_code": "",
                            "details": {
                                "context": {"a": "b\ufffd", "list": [1, 2.5, None, True]},
                                "path": "/x",
                            },
                        }
                    )
            finally:
                reset_context(token)
        seal_here()
        assert not AuditPending.objects.exists()
        events = AuditEvent.objects.filter(action__startswith="test.").order_by("seq")
        assert list(events.values(*fields)) == expected
        assert services.audit_verify()["ok"]


# --- the event body: the fast path writes exactly what the reference path writes -----------

_MOMENT = "2026-12-06T03:00:00.123456+00:00"

_BODIES: list[tuple[dict[str, str], dict[str, Any]]] = [
    # (context fields, event_body keyword arguments)
    ({}, {"action": "datakey.generate", "target": "service_key:payments", "target_version": 3,
          "details": {"method": "POST", "path": "/api/v1/service-keys/payments/generate-data-key/",
                      "context": {"order": "1234", "tenant": "acme"}}}),
    ({"source_ip": "::ffff:127.0.0.1"}, {"action": "key.rotate", "target_version": None}),
    ({"source_ip": "not an address", "user_agent": "Zoë 🔑 \u2028 \"quoted\" \\ back\tslash\x01"},
     {"action": "datakey.decrypt", "details": {"context": {"ключ": "значение", "emoji": "🔑"}}}),
    ({"user_agent": "nul\x00inside"}, {"action": "datakey.decrypt"}),
    ({}, {"action": "data.encrypt", "details": {"context": {"k": "nul\x00value"}}}),
    ({}, {"action": "data.encrypt", "error_code": "bad\x00code", "outcome": "error"}),
    ({"actor": "a" * 500, "role": "r" * 300, "request_id": "x" * 100, "user_agent": "u" * 900},
     {"action": "datakey.generate", "target": "t" * 400, "error_code": "e" * 100}),
    ({}, {"action": "datakey.generate", "target_version": True}),
    ({}, {"action": "test.event", "details": {"ratio": 0.1, "n": 1, "flag": False, "none": None}}),
    ({}, {"action": "test.event", "details": {1: "int key", 10: "another"}}),
    ({}, {"action": "test.event", "details": {"pair": ("a", "b"), "list": [1, ["x", {"y": "z"}]]}}),
    ({}, {"action": "test.event", "details": {"when": datetime(2026, 1, 2, tzinfo=UTC)}}),
    ({}, {"action": "test.event", "details": {"context": {"big": "v" * 5000}}}),
    ({}, {"action": "test.event", "details": {"context": {"mid": "é" * 400}}}),
    ({}, {"action": "test.event", "outcome": Outcome.DENIED, "error_code": "role_not_allowed"}),
]  # fmt: skip


@pytest.mark.parametrize(("who", "event"), _BODIES)
def test_event_body_is_the_canonical_form_of_the_event(
    monkeypatch: pytest.MonkeyPatch, who: dict[str, str], event: dict[str, Any]
) -> None:
    moment = datetime.fromisoformat(_MOMENT)
    monkeypatch.setattr(services.timezone, "now", lambda: moment)
    token = set_context(AuditContext(**{"actor": "token:7", "role": "key_user",
                                        "source_ip": "127.0.0.1", **who}))  # fmt: skip
    try:
        body = services.event_body(**event)
        reference = chain.canonical(
            services._content(
                **{"outcome": "success", "target": "", "target_version": None,
                   "error_code": "", "details": None, **event}
            )
        )  # fmt: skip
    finally:
        reset_context(token)
    assert body == reference
    parsed = json.loads(body)
    assert "\x00" not in body and list(parsed) == sorted(parsed)


def test_a_data_key_request_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def reference(**kwargs: Any) -> dict[str, Any]:
        raise AssertionError("the usual event took the reference path")

    monkeypatch.setattr(services, "_content", reference)
    event = _BODIES[0][1]
    body = services.event_body(**event)
    assert json.loads(body)["details"]["context"] == {"order": "1234", "tenant": "acme"}
