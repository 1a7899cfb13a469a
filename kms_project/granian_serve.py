"""KCM's web processes on granian (HTTP handled in Rust), the default web server:
``python -m kms_project.web`` starts it (or gunicorn, with KCM_WEB_SERVER=gunicorn).

The same WSGI application as under gunicorn (kms_project.wsgi, the data plane in front of
Django) and the same settings: KCM_WEB_WORKERS processes of KCM_WEB_THREADS request threads
each. What gunicorn_conf's hooks do, done here:

- In the main process, before any worker exists: the workers' metrics files go to a folder
  emptied now, and the node's scrapes are answered on KCM_METRICS_PORT (kms_project/metrics.py).
- In each worker, after the fork and before it serves (`worker_application`, granian's
  factory): close the inherited scrape listener, drop the "live" gauges of workers that died
  (gunicorn's child_exit), load the application, then refuse to serve with a keystore that
  lacks a mechanism KCM needs: the worker leaves a note and exits with status 3, and the
  server stops with status 3 (gunicorn's worker boot error).
- A worker that dies (SIGKILL, out of memory) is replaced, as gunicorn's arbiter does.
  Granian stops the whole server when a worker dies again within 5.5 s of its replacement
  (its crash-loop rule, not configurable); for any cause but the keystore check, `serve`
  starts it again after a second, so a node never stays down because its workers were killed.
  Granian's own loop can lose a worker when two die together (all of them SIGKILLed, the
  out-of-memory killer): `server_class()` respawns every one of them (see its docstring).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from typing import Any

logger = logging.getLogger("kcm.web")

# Each worker process holds its HSM session and database connection; its request threads share
# them (HSM calls are serialised per process: HSM-NOTES).
WSGI_FACTORY = "kms_project.granian_serve:worker_application"
# Where a worker that refused to serve says so, for the main process (set by `serve`).
REFUSAL_NOTE_ENV = "KCM_WEB_REFUSAL_NOTE"


def serve(address: str, port: int, workers: int | None = None) -> None:
    """Run the server in this process until SIGTERM/SIGINT (then stop the workers in order)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kms_project.settings")
    from kms_project import logconfig, metrics
    from kms_project.env import env_int

    metrics.prepare_multiprocess("web")
    listener = metrics.listener_address()
    if listener is not None:
        metrics.serve(*listener)

    from granian.constants import Interfaces

    with tempfile.TemporaryDirectory(prefix="kcm-web-") as folder:
        os.environ[REFUSAL_NOTE_ENV] = note = os.path.join(folder, "refused")
        while True:
            server = server_class()(
                WSGI_FACTORY,
                factory=True,
                address=address,
                port=port,
                interface=Interfaces.WSGI,
                workers=workers or env_int("KCM_WEB_WORKERS", 2, minimum=1),
                blocking_threads=env_int("KCM_WEB_THREADS", 4, minimum=1),
                respawn_failed_workers=True,
                log_dictconfig=logconfig.from_env(),
                log_access=False,  # each request is logged by the application, with its route
            )
            with contextlib.suppress(SystemExit):  # granian exits 1 when it gave up on its workers
                server.serve()
            if os.path.exists(note):
                sys.exit(3)
            if server.interrupt_signal:
                return  # SIGTERM or SIGINT: a clean stop
            logger.error("web workers kept dying; starting the server again in 1 s")
            time.sleep(1)
            if server.interrupt_signal:  # a stop asked for during the pause
                return


def server_class() -> type[Any]:
    """granian's server (multiprocess), with a respawn loop that loses no worker.

    Each worker has a watcher thread in the main process that, when the worker dies, appends
    its index to `interrupt_children` and sets `main_loop_interrupt`. Granian's loop (2.8) copies
    that list, clears it, then clears the event: a second worker whose watcher appends between
    the copy and the clear is forgotten, and one whose watcher sets the event before it is
    cleared is never looked at again. Either way the node serves on fewer workers until the
    next death (a CI run found "1 of 2 web workers running" a minute after both were SIGKILLed,
    as this leaves it).
    This loop clears the event first and then takes the indexes one by one, and waits only when
    no death is left to handle: a death noted at any moment is respawned. It keeps granian's
    crash-loop rule and its SIGHUP reload; KCM sets neither workers' lifetime nor a memory limit,
    the loop's other duties, which it leaves out."""
    from granian import Granian
    from granian.log import logger as granian_logger

    class Server(Granian):  # type: ignore[misc,valid-type]
        def _serve_loop(self, spawn_target: Any, target_loader: Any) -> None:
            while True:
                if not (self.interrupt_children or self.reload_signal or self.interrupt_signal):
                    self.main_loop_interrupt.wait()
                if self.interrupt_signal:
                    break
                self.main_loop_interrupt.clear()
                died: list[int] = []
                while self.interrupt_children:
                    died.append(self.interrupt_children.pop(0))
                if died:
                    if not self.respawn_failed_workers:
                        self.interrupt_children.extend(died)  # shutdown() then exits 1
                        break
                    cycle = time.monotonic()
                    if any(cycle - self.respawned_wrks.get(idx, 0) <= 5.5 for idx in died):
                        granian_logger.error("Worker crash loop detected, exiting")
                        self.interrupt_children.extend(died)
                        break
                    self.respawned_wrks.clear()
                    self._respawn_workers(sorted(set(died)), spawn_target, target_loader)
                    self._metrics.incr_respawn_err(1)
                # SIGHUP: granian respawns every worker, gracefully; after the deaths, as granian
                # does (its respawn times would otherwise make them look like a crash loop).
                if self.reload_signal:
                    self._reload(spawn_target, target_loader)

    return Server


def worker_application() -> Any:
    """In each worker, after the fork: the WSGI application, or exit 3 (see the module doc)."""
    from kms_project import metrics

    metrics.close_inherited_listener()
    metrics.sweep_dead()
    from apps.keystores.base import CapabilityNotSupported
    from apps.keystores.registry import platform_keystore_check
    from kms_project.wsgi import application

    try:
        platform_keystore_check()
    except CapabilityNotSupported as exc:
        print(f"KCM cannot start: {exc}", file=sys.stderr, flush=True)
        note = os.environ.get(REFUSAL_NOTE_ENV)
        if note:
            with open(note, "w") as handle:
                handle.write("keystore check\n")
        sys.exit(3)  # the worker process ends with status 3
    return application


def main() -> None:
    from kms_project.web import main as web_main

    web_main(server="granian")


if __name__ == "__main__":
    main()
