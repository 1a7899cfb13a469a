"""The after-fork registry: a forked child runs every callback, in the order registered."""

from __future__ import annotations

import os

import pytest

from apps.core import forks


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """An empty registry for the test (the real callbacks would reset this process's state)."""
    callbacks: list[object] = []
    monkeypatch.setattr(forks, "_callbacks", callbacks)
    return callbacks


def test_a_forked_child_runs_the_callbacks_in_order_and_the_parent_none(
    registry: list[object],
) -> None:
    ran: list[str] = []

    def first() -> None:
        ran.append("first")

    def second() -> None:
        ran.append("second")

    forks.after_fork_in_child(first)
    forks.after_fork_in_child(second)
    forks.after_fork_in_child(first)  # registered once only
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what ran, and leave without running pytest's exit
        os.write(write_end, ",".join(ran).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as child_report:
        assert child_report.read() == "first,second"
    assert os.waitpid(pid, 0)[1] == 0
    assert ran == []


def test_a_failing_callback_does_not_stop_the_next(registry: list[object]) -> None:
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    def after() -> None:
        ran.append("after")

    forks.after_fork_in_child(broken)
    forks.after_fork_in_child(after)
    forks._run_in_child()  # what the child runs after a fork
    assert ran == ["after"]
