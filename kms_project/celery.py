"""Celery application, tenant-aware: a task sent inside a tenant's schema runs in it."""

from __future__ import annotations

import os
from typing import Any

from celery.apps.worker import Worker
from celery.signals import worker_process_init, worker_process_shutdown
from kombu.utils.objects import cached_property
from tenant_schemas_celery.app import CeleryApp

import kms_project.broker  # registers the "kcmfs" transport
import kms_project.tasklog  # noqa: F401  (logging: JSON lines, request ids carried into tasks)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kms_project.settings")


class MetricsFolderWorker(Worker):
    """`celery worker`, which first points prometheus-client at a fresh metrics folder for the
    worker's processes: before Django loads the apps (and prometheus-client, which chooses its
    storage when imported), and before the pool forks (kms_project/metrics.py)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from kms_project import metrics

        metrics.prepare_multiprocess("worker")
        super().__init__(*args, **kwargs)


class KcmCelery(CeleryApp):
    @cached_property
    def Worker(self) -> type[Worker]:
        return self.subclass_with_self(MetricsFolderWorker)


app = KcmCelery("kms_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _check_platform_keystore(**_: object) -> None:
    # In each worker process, after the fork: refuse a keystore without what KCM needs.
    from apps.keystores.registry import platform_keystore_check

    platform_keystore_check()


@worker_process_shutdown.connect
def _metrics_process_dead(pid: int | None = None, **_: object) -> None:
    from kms_project import metrics

    metrics.mark_dead(pid or os.getpid())
