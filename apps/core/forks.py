"""The one after-fork registry: code that keeps per-process state (locks, threads, HSM
sessions, connections) registers here what a forked child must forget.

gunicorn and Celery's prefork pool fork after Django has loaded, so whatever a module set up in
the parent (a lock a thread held, a session, a listener thread) is not the child's to use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

logger = logging.getLogger(__name__)

_callbacks: list[Callable[[], None]] = []


def after_fork_in_child(callback: Callable[[], None]) -> Callable[[], None]:
    """Run `callback` in the child after every fork, after those registered before it.
    Returns it, so it can be used as a decorator."""
    if callback not in _callbacks:
        _callbacks.append(callback)
    return callback


def _run_in_child() -> None:
    for callback in list(_callbacks):
        try:
            callback()
        except Exception:  # one module's failure must not leave the others' state inherited
            logger.exception("after-fork callback %s failed", callback.__qualname__)


os.register_at_fork(after_in_child=_run_in_child)
