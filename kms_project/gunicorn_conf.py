"""gunicorn settings for KCM's web processes when KCM_WEB_SERVER=gunicorn (granian is the
default): every launcher starts `python -m kms_project.web`, which runs
``gunicorn -c python:kms_project.gunicorn_conf`` then.

gthread workers, which keep HTTP connections alive between requests (sync workers close
each one), with four request threads each: a thread waiting on the database or a customer's
key manager does not hold up the others. The HSM calls of a process are serialised under one
lock (HSM-NOTES); a key another process created is found again after one re-initialisation
(SoftHSM2's per-process object index, see apps/keystores/pkcs11/keystore.py).

    KCM_WEB_WORKERS   processes (default 2)
    KCM_WEB_THREADS   request threads per process (default 4)

The master also serves the node's Prometheus metrics on a listener of its own when
KCM_METRICS_PORT is set (kms_project/metrics.py).
"""

import os
from typing import Any

from kms_project import logconfig as _logconfig  # not "logconfig": a gunicorn setting
from kms_project.env import env_int

wsgi_app = "kms_project.wsgi:application"
workers = env_int("KCM_WEB_WORKERS", 2, minimum=1)
worker_class = "gthread"
threads = env_int("KCM_WEB_THREADS", 4, minimum=1)
# Never preload: PKCS#11 must be initialised in each worker, after the fork (HSM-NOTES).
preload_app = False
# No access log: the web processes log each request, with its route instead of its path
# (apps.core.middleware); everything, the master's lines too, as kms_project/logconfig.py says.
logconfig_dict = _logconfig.from_env()
# gunicorn's default control socket path is one per user, shared by every server running.
control_socket_disable = True
_metrics_server: Any = None


def on_starting(server: object) -> None:
    # In the master, before any worker exists: the workers' metrics files go to a folder
    # emptied now, and scrapes are answered here, off the public port.
    global _metrics_server
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kms_project.settings")
    from kms_project import metrics

    metrics.prepare_multiprocess("web")
    listener = metrics.listener_address()
    if listener is not None:
        _metrics_server = metrics.serve(*listener)


def post_fork(server: object, worker: object) -> None:
    # The worker does not serve scrapes: close its copy of the listening socket.
    if _metrics_server is not None:
        _metrics_server.socket.close()


def child_exit(server: object, worker: Any) -> None:
    from kms_project import metrics

    metrics.mark_dead(worker.pid)


def post_worker_init(worker: object) -> None:
    # In each web process, after the fork (PKCS#11 must not be touched before it): refuse to
    # serve with a keystore that lacks a mechanism KCM needs; gunicorn then stops.
    from apps.keystores.base import CapabilityNotSupported
    from apps.keystores.registry import platform_keystore_check

    try:
        platform_keystore_check()
    except CapabilityNotSupported as exc:
        import sys

        print(f"KCM cannot start: {exc}", file=sys.stderr)
        sys.exit(3)  # gunicorn's "worker failed to boot": the arbiter halts
