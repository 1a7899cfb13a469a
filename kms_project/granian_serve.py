"""KCM's web processes on granian (its HTTP handling in Rust) instead of gunicorn gthread:
``python -m kms_project.granian_serve --bind 127.0.0.1:8000``.

The same WSGI application (kms_project.wsgi, with the data plane in front of Django) and the
same settings: KCM_WEB_WORKERS processes of KCM_WEB_THREADS request threads each. Measured in
docs/dataplane.md (bench.dataplane, BENCH_DP_SIDES=fast-granian,...), where it serves the data
plane with about a third less CPU per request than gunicorn. Not yet the default launcher:
gunicorn_conf's hooks have no equivalent here yet (the keystore check after fork that halts
the server on a token without AES-GCM; dropping a dead worker's live gauges).
"""

from __future__ import annotations

import argparse
import os


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kms_project.settings")
    from kms_project import logconfig, metrics
    from kms_project.env import env_int

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1:8000", help="address:port")
    args = parser.parse_args()
    address, _, port = args.bind.rpartition(":")
    # Before any worker exists: the workers' metrics files go to a folder emptied now.
    metrics.prepare_multiprocess("web")

    from granian import Granian
    from granian.constants import Interfaces

    Granian(
        "kms_project.wsgi:application",
        address=address or "127.0.0.1",
        port=int(port),
        interface=Interfaces.WSGI,
        workers=env_int("KCM_WEB_WORKERS", 2, minimum=1),
        blocking_threads=env_int("KCM_WEB_THREADS", 4, minimum=1),
        log_dictconfig=logconfig.from_env(),
        log_access=False,  # each request is logged by the application, with its route
    ).serve()


if __name__ == "__main__":
    main()
