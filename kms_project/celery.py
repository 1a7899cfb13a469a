"""Celery application, tenant-aware: a task sent inside a tenant's schema runs in it."""

from __future__ import annotations

import os

from celery.signals import worker_process_init
from tenant_schemas_celery.app import CeleryApp

import kms_project.broker  # registers the "kcmfs" transport
import kms_project.tasklog  # noqa: F401  (logging: JSON lines, request ids carried into tasks)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kms_project.settings")

app = CeleryApp("kms_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _check_platform_keystore(**_: object) -> None:
    # In each worker process, after the fork: refuse a keystore without what KCM needs.
    from apps.keystores.registry import platform_keystore_check

    platform_keystore_check()
