"""Shows the fuzz run's one-line summary at the end of every pytest run that ran it (the
counts are the acceptance figures, so they are printed even when the test passes)."""

from __future__ import annotations

from typing import Any

SUMMARY: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in SUMMARY:
        terminalreporter.write_line(line)
