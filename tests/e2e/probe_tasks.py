"""A task that only the end-to-end stack's Celery worker loads (`celery worker -I`): it decrypts
a data key inside the worker, to show whether the chain is usable from a worker process (the
kill switch must reach workers too). Not part of KCM itself."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from apps.core.errors import KcmError
from apps.keychain import datakeys


@shared_task(name="tests.e2e.probe_tasks.service_key_probe")
def service_key_probe(service_key: str, ciphertext: str, context: dict[str, str]) -> dict[str, Any]:
    try:
        datakeys.run(
            service_key=service_key,
            operation="decrypt-data-key",
            item={"ciphertext": ciphertext, "context": context},
        )
    except KcmError as exc:
        return {"ok": False, "code": exc.code}
    return {"ok": True}
