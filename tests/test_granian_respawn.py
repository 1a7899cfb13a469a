"""The web server's main loop respawns every worker that dies, even two dying together.

Each granian worker has a watcher thread in the main process that, when the worker dies,
appends its index to `interrupt_children` and sets `main_loop_interrupt`. When all workers are
SIGKILLed at once, the second watcher can run while the loop is handling the first death. Here
it runs at the worst moment: right after the loop has taken the first index off the list. The
loop runs on a real server object (nothing is started); only the respawn itself is recorded
instead of forking a worker.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from granian import Granian

from kms_project.granian_serve import server_class


class _SecondDeath(list[int]):
    """`interrupt_children` whose first removal lets the second worker's watcher run."""

    def __init__(self, server: Any) -> None:
        super().__init__([0])
        self.server = server
        self.fired = False

    def _watcher_of_worker_2(self) -> None:
        if not self.fired:
            self.fired = True
            self.append(1)
            self.server.main_loop_interrupt.set()

    def clear(self) -> None:  # granian's loop takes the list by copy, then clears it
        super().clear()
        self._watcher_of_worker_2()

    def pop(self, index: Any = -1) -> int:  # KCM's takes the indexes one by one
        value = super().pop(index)
        self._watcher_of_worker_2()
        return value


def _server(base: type[Any], respawned: list[int], stop_after: list[int]) -> Any:
    """A server whose respawns are recorded (with their times, as granian's own record them
    for its crash-loop rule) instead of forking workers; stopped, as SIGTERM would, once the
    workers respawned are `stop_after`."""
    server = base("kms_project.granian_serve:worker_application", factory=True, workers=2,
                  respawn_failed_workers=True)  # fmt: skip

    def respawn(workers: list[int], *args: Any, **kwargs: Any) -> None:
        for idx in workers:
            server.respawned_wrks[idx] = time.monotonic()
        respawned.extend(workers)
        if sorted(respawned) == stop_after:
            server.interrupt_signal = True
            server.main_loop_interrupt.set()

    server._respawn_workers = respawn
    return server


def _loop(server: Any) -> threading.Thread:
    loop = threading.Thread(target=server._serve_loop, args=(None, None), daemon=True)
    loop.start()
    loop.join(2)
    return loop


def _run_loop(base: type[Any]) -> tuple[list[int], Any, threading.Thread]:
    respawned: list[int] = []
    server = _server(base, respawned, stop_after=[0, 1])
    server.interrupt_children = _SecondDeath(server)
    server.main_loop_interrupt.set()  # the first watcher's
    return respawned, server, _loop(server)


def test_two_workers_dying_together_are_both_respawned() -> None:
    respawned, _server, loop = _run_loop(server_class())
    assert not loop.is_alive(), f"the loop is stuck, having respawned {respawned}"
    assert sorted(respawned) == [0, 1]


def test_granians_own_loop_loses_the_second_worker() -> None:
    """Why KCM has its own loop: granian's (2.8) forgets worker 2 here, and then waits for
    another death that may never come. If this fails, granian has fixed it (see
    kms_project.granian_serve.server_class): KCM's loop can then go."""
    respawned, server, loop = _run_loop(Granian)
    assert loop.is_alive() and respawned == [0], respawned
    assert list(server.interrupt_children) == [1]  # noted, and never looked at again
    server.interrupt_signal = True
    server.main_loop_interrupt.set()
    loop.join(2)


def test_a_death_then_a_reload_respawn_without_a_crash_loop() -> None:
    """Worker 2 died, then SIGHUP came before the loop woke: worker 2 is respawned, then every
    worker for the reload, and the server goes on (it does not take the reload's fresh
    respawns for a crash loop and exit)."""
    respawned: list[int] = []
    server = _server(server_class(), respawned, stop_after=[0, 1, 1])
    server.interrupt_children.append(1)
    server.reload_signal = True
    server.main_loop_interrupt.set()
    loop = _loop(server)
    assert not loop.is_alive() and server.interrupt_signal, respawned
    assert respawned == [1, 0, 1] and list(server.interrupt_children) == []


def test_a_worker_dying_again_at_once_stops_the_server_to_be_restarted() -> None:
    """granian's crash-loop rule, kept: a worker that dies again within 5.5 s of its respawn
    ends the loop with the death still noted, so that shutdown() exits 1 and
    kms_project.granian_serve.serve starts the server again."""
    respawned: list[int] = []
    server = _server(server_class(), respawned, stop_after=[])
    server.interrupt_children.append(0)
    server.main_loop_interrupt.set()
    loop = threading.Thread(target=server._serve_loop, args=(None, None), daemon=True)
    loop.start()
    deadline = time.monotonic() + 2
    while respawned != [0] and time.monotonic() < deadline:
        time.sleep(0.01)
    server.interrupt_children.append(0)  # its watcher again, at once
    server.main_loop_interrupt.set()
    loop.join(2)
    assert not loop.is_alive() and not server.interrupt_signal, respawned
    assert respawned == [0] and list(server.interrupt_children) == [0]
