"""The chain is append-only and tamper-evident: every kind of tampering is reported at the
first bad event, and the database itself refuses edits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.utils import DatabaseError
from django_tenants.utils import tenant_context

from apps.audit import chain, services
from apps.audit.context import AuditContext, reset_context, set_context
from apps.audit.models import AuditEvent, AuditPending
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
