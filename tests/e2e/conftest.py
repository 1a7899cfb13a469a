"""`live_stack`: one LiveStack per test module.

A module chooses its stack with a module-level dict, e.g.
    LIVE_STACK = {"web_workers": 4, "celery_pool": "prefork"}
(defaults: 2 gunicorn workers and a solo Celery worker).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .stack import LiveStack


@pytest.fixture(scope="module")
def live_stack(request: pytest.FixtureRequest) -> Iterator[LiveStack]:
    options = {"celery_pool": "solo", **getattr(request.module, "LIVE_STACK", {})}
    with LiveStack(**options) as stack:
        yield stack
