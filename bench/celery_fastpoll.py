"""KCM's Celery application with the embedded filesystem broker polled every 5 ms, not every
second, so that bench.killswitch times the worker's reaction to a revocation rather than the
broker's polling (production brokers such as Redis push messages to the worker)."""

from __future__ import annotations

from kms_project.celery import app

app.conf.broker_transport_options = {
    **(app.conf.broker_transport_options or {}),
    "polling_interval": 0.005,
}

__all__ = ["app"]
