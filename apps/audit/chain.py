"""The hash chain: how an event is serialised and hashed, and how a chain is verified.

This module is the specification that tools/audit_verify.py (the offline verifier) follows;
see docs/audit.md. Keep the two in step.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64

# The fields an event's hash covers, besides its position and its predecessor's hash.
FIELDS = (
    "occurred_at",
    "actor",
    "role",
    "source_ip",
    "user_agent",
    "request_id",
    "action",
    "target",
    "target_version",
    "outcome",
    "error_code",
    "details",
)


def timestamp(moment: datetime) -> str:
    """UTC with microseconds, always the same width: 2026-11-28T23:40:00.000123Z
    (strftime's "%Y-%m-%dT%H:%M:%S.%fZ"; isoformat writes the same, in a third of the time)."""
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    if utc.year < 1000:  # %Y does not pad these to four digits; isoformat would
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.isoformat(timespec="microseconds")[:26] + "Z"  # without its "+00:00"


# One encoder for every event (json.dumps with these options builds a new one per call).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(content: Mapping[str, Any]) -> str:
    """The event content as canonical JSON (sorted keys, no spaces, UTF-8 as is)."""
    return _CANONICAL.encode({name: content[name] for name in FIELDS})


def canonical_value(value: Any) -> str:
    """One value (say an event's details) exactly as `canonical` writes it inside an event."""
    return _CANONICAL.encode(value)


def event_hash(prev_hash: str, seq: int, body: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{seq}\n{body}".encode()).hexdigest()


@dataclass(frozen=True)
class Problem:
    seq: int
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"seq": self.seq, "reason": self.reason}


def verify_events(
    events: Iterable[Mapping[str, Any]], *, start_seq: int = 1, start_hash: str = GENESIS
) -> tuple[int, str, Problem | None]:
    """Walk events in `seq` order; returns (count, last hash, first problem or None).

    Each event is a mapping with `seq`, `prev_hash`, `hash` and the FIELDS (occurred_at as
    produced by `timestamp`)."""
    expected_seq, running = start_seq, start_hash
    count = 0
    for event in events:
        seq = int(event["seq"])
        if seq != expected_seq:
            return (
                count,
                running,
                Problem(expected_seq, f"event {expected_seq} is missing (next is {seq})"),
            )
        if event["prev_hash"] != running:
            return (
                count,
                running,
                Problem(seq, "does not link to its predecessor (removed or reordered)"),
            )
        if event_hash(running, seq, canonical(event)) != event["hash"]:
            return count, running, Problem(seq, "content does not match its hash (edited)")
        running = event["hash"]
        expected_seq += 1
        count += 1
    return count, running, None
