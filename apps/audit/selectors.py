"""Searching the audit log: one set of filters for the console and the API."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.utils.dateparse import parse_datetime

from apps.audit.models import AuditEvent, Outcome
from apps.audit.sealer import seal_here
from apps.core.errors import ValidationFailed

FILTERS = ("since", "until", "action", "actor", "target", "outcome")


def _moment(name: str, value: str) -> datetime:
    moment = parse_datetime(value)
    if moment is None or moment.tzinfo is None:
        raise ValidationFailed(
            f"{name} must be an ISO 8601 time with a zone, e.g. 2026-11-28T00:00:00Z.",
            code="invalid_filter",
        )
    return moment


def clean_filters(raw: Mapping[str, Any]) -> dict[str, str]:
    """Keep the known, non-empty filters as strings; refuse malformed ones."""
    cleaned = {name: str(raw[name]).strip() for name in FILTERS if raw.get(name)}
    for name in ("since", "until"):
        if name in cleaned:
            _moment(name, cleaned[name])
    if "outcome" in cleaned and cleaned["outcome"] not in Outcome.values:
        raise ValidationFailed(
            f"outcome must be one of {', '.join(Outcome.values)}.", code="invalid_filter"
        )
    return cleaned


def event_search(filters: Mapping[str, str]) -> QuerySet[AuditEvent]:
    """Events matching `filters` (see FILTERS; action and actor match a prefix), newest first."""
    seal_here()  # so that what was committed a moment ago is found too
    queryset = AuditEvent.objects.all()
    if "since" in filters:
        queryset = queryset.filter(occurred_at__gte=_moment("since", filters["since"]))
    if "until" in filters:
        queryset = queryset.filter(occurred_at__lt=_moment("until", filters["until"]))
    if "action" in filters:
        queryset = queryset.filter(action__startswith=filters["action"])
    if "actor" in filters:
        queryset = queryset.filter(actor__startswith=filters["actor"])
    if "target" in filters:
        queryset = queryset.filter(target=filters["target"])
    if "outcome" in filters:
        queryset = queryset.filter(outcome=filters["outcome"])
    return queryset.order_by("-seq")
