"""KCM's web server, as every launcher starts it (`make run`, docker, the end-to-end tests and
benchmarks): ``python -m kms_project.web --bind 127.0.0.1:8000 [--workers N]``.

    KCM_WEB_SERVER    granian (default: kms_project/granian_serve.py) or gunicorn
                      (kms_project/gunicorn_conf.py, gthread workers)
    KCM_WEB_WORKERS   processes (default 2); --workers overrides it
    KCM_WEB_THREADS   request threads per process (default 4)

Neither preloads the application: PKCS#11 is initialised in each worker, after the fork
(HSM-NOTES). docs/dataplane.md compares the two (bench.dataplane measures both).
"""

from __future__ import annotations

import argparse
import os
import sys

SERVERS = ("granian", "gunicorn")


def main(server: str | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kms_project.settings")
    from kms_project.env import env_choice

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1:8000", help="address:port")
    parser.add_argument("--workers", type=int, default=None, help="processes (KCM_WEB_WORKERS)")
    args = parser.parse_args()
    address, _, port = args.bind.rpartition(":")
    if not port.isdigit():
        parser.error(f"--bind wants address:port, got {args.bind!r}")
    server = server or env_choice("KCM_WEB_SERVER", SERVERS, "granian")
    if server == "gunicorn":
        command = [sys.executable, "-m", "gunicorn", "-c", "python:kms_project.gunicorn_conf",
                   "-b", args.bind]  # fmt: skip
        if args.workers:
            command += ["-w", str(args.workers)]
        os.execv(sys.executable, command)  # noqa: S606 (gunicorn takes this process over)
    from kms_project.granian_serve import serve

    serve(address or "127.0.0.1", int(port), args.workers)


if __name__ == "__main__":
    main()
