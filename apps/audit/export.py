"""Exports: any filtered range, as CSV or JSON Lines, in constant memory, with a manifest
signed by the platform's HSM-held audit key. tools/audit_verify.py checks them offline."""

from __future__ import annotations

import base64
import contextlib
import csv
import errno
import hashlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from apps.audit import chain
from apps.audit.models import AuditCheckpoint, AuditExport, ExportState
from apps.audit.selectors import clean_filters, event_search
from apps.audit.services import as_chain_dict, audit_record, checkpoint_message, signing_key
from apps.core.errors import Conflict, NotFound, ValidationFailed
from apps.core.tenancy import current_schema
from apps.keystores.registry import platform_keystore

FORMATS = ("csv", "jsonl")
COLUMNS = ("seq", *chain.FIELDS, "prev_hash", "hash")
MANIFEST_FORMAT = "kcm-audit-export/1"
_PROGRESS_EVERY = 5000
# No space (ENOSPC), over quota (EDQUOT), or over the file-size limit (EFBIG, RLIMIT_FSIZE).
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
DISK_FULL_DETAIL = (
    "The export folder has no space left. Free space there (or point KCM_AUDIT_EXPORT_DIR "
    "at a larger disk), then request the export again."
)

logger = logging.getLogger(__name__)


def export_dir() -> Path:
    path = Path(settings.KCM_AUDIT_EXPORT_DIR) / current_schema()
    path.mkdir(parents=True, exist_ok=True)
    return path


def export_request(*, filters: dict[str, Any], format: str, requested_by: str) -> AuditExport:
    """Queue an export (the request itself is audited)."""
    if format not in FORMATS:
        raise ValidationFailed(
            f"format must be one of {', '.join(FORMATS)}.", code="invalid_format"
        )
    cleaned = clean_filters(filters)
    export = AuditExport.objects.create(requested_by=requested_by, filters=cleaned, format=format)
    audit_record(
        action="audit.export", target=str(export.id), details={"filters": cleaned, "format": format}
    )
    return export


def _rows(export: AuditExport) -> Iterator[dict[str, Any]]:
    fields = ["seq", "prev_hash", "hash", *chain.FIELDS]
    queryset = event_search(export.filters).order_by("seq").values(*fields)
    for row in queryset.iterator(chunk_size=2000):
        yield as_chain_dict(row)


def _line(format: str, event: dict[str, Any]) -> bytes:
    if format == "jsonl":
        return (
            json.dumps({name: event[name] for name in COLUMNS}, ensure_ascii=False) + "\n"
        ).encode()
    buffer = io.StringIO()
    values = [
        json.dumps(event[n], ensure_ascii=False) if n == "details" else event[n] for n in COLUMNS
    ]
    csv.writer(buffer, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return buffer.getvalue().encode()


def export_run(*, export_id: str) -> AuditExport:
    """Write the export file and its signed manifest; safe to run again after a crash."""
    export = AuditExport.objects.filter(pk=export_id).first()
    if export is None:
        raise NotFound("No such export.", code="export_not_found")
    if export.state == ExportState.SUCCEEDED:
        return export
    total = event_search(export.filters).count()
    AuditExport.objects.filter(pk=export.pk).update(
        state=ExportState.RUNNING, total=total, done=0, error="", error_code=""
    )
    path: Path | None = None
    digest = hashlib.sha256()
    count, first, last = 0, None, None
    try:
        path = export_dir() / f"{export.pk}.{export.format}"
        with path.open("wb") as out:
            if export.format == "csv":
                header = (",".join(COLUMNS) + "\n").encode()
                out.write(header)
                digest.update(header)
            for event in _rows(export):
                line = _line(export.format, event)
                out.write(line)
                digest.update(line)
                count += 1
                first = first or event
                last = event
                if count % _PROGRESS_EVERY == 0:
                    AuditExport.objects.filter(pk=export.pk).update(done=count)
        manifest = _manifest(export, count, first, last, digest.hexdigest(), path.name)
    except OSError as exc:
        if exc.errno not in _DISK_FULL:
            _fail(
                export,
                path,
                "export_failed",
                f"The export file could not be written ({exc.strerror}).",
            )
            raise
        _fail(export, path, "export_disk_full", DISK_FULL_DETAIL)
        logger.warning("audit export %s: the export folder is full", export.pk)
        export.refresh_from_db()
        return export
    except Exception as exc:
        _fail(export, path, "export_failed", f"The export failed ({type(exc).__name__}).")
        raise
    AuditExport.objects.filter(pk=export.pk).update(
        state=ExportState.SUCCEEDED,
        done=count,
        total=count,
        file_name=path.name,
        manifest=manifest,
        finished_at=timezone.now(),
    )
    export.refresh_from_db()
    return export


def export_not_queued(*, export_id: str, reason: str) -> None:
    """The broker refused the export's task: fail it (`broker_unavailable`) rather than leave
    it queued with nothing to run it."""
    logger.warning("audit export %s: not queued (%s)", export_id, reason)
    export = AuditExport.objects.filter(pk=export_id).first()
    if export is not None:
        _fail(export, None, "broker_unavailable", "The job queue was unavailable; request again.")


def _fail(export: AuditExport, path: Path | None, code: str, detail: str) -> None:
    """Mark the export failed with a stable `code` and a message that names no path, and
    remove what was written of its file: a full disk is not left fuller."""
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    AuditExport.objects.filter(pk=export.pk).update(
        state=ExportState.FAILED, error=detail[:500], error_code=code, finished_at=timezone.now()
    )


def _manifest(
    export: AuditExport,
    count: int,
    first: dict[str, Any] | None,
    last: dict[str, Any] | None,
    file_sha256: str,
    file_name: str,
) -> dict[str, Any]:
    checkpoint = (
        AuditCheckpoint.objects.filter(seq__gte=last["seq"]).order_by("seq").first()
        if last
        else None
    )
    key = signing_key()
    body: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "schema": current_schema(),
        "export_id": str(export.pk),
        "file": file_name,
        "file_format": export.format,
        "file_sha256": file_sha256,
        "filters": export.filters,
        "count": count,
        "first_seq": first["seq"] if first else None,
        "first_prev_hash": first["prev_hash"] if first else None,
        "last_seq": last["seq"] if last else None,
        "last_hash": last["hash"] if last else None,
        "exported_at": chain.timestamp(timezone.now()),
        "checkpoint": None
        if checkpoint is None
        else {
            "seq": checkpoint.seq,
            "hash": checkpoint.hash,
            "signature": checkpoint.signature,
            "message": checkpoint_message(
                current_schema(), checkpoint.seq, checkpoint.hash
            ).decode(),
        },
        "key_fingerprint": key.fingerprint,
        "public_key_pem": public_key_pem(bytes(key.public_key_der)),
    }
    signature = platform_keystore().sign(key.handle, manifest_message(body))
    return {**body, "signature": base64.b64encode(signature).decode()}


def manifest_message(body: dict[str, Any]) -> bytes:
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def public_key_pem(der: bytes) -> str:
    lines = base64.encodebytes(der).decode().replace("\n", "")
    wrapped = "\n".join(lines[i : i + 64] for i in range(0, len(lines), 64))
    return f"-----BEGIN PUBLIC KEY-----\n{wrapped}\n-----END PUBLIC KEY-----\n"


def export_file(*, export_id: str) -> tuple[AuditExport, Path]:
    export = AuditExport.objects.filter(pk=export_id).first()
    if export is None:
        raise NotFound("No such export.", code="export_not_found")
    if export.state != ExportState.SUCCEEDED:
        raise Conflict(
            f"The export is {export.state}; wait until it has succeeded.", code="export_not_ready"
        )
    audit_record(action="audit.export_download", target=str(export.pk))
    return export, export_dir() / export.file_name
