from __future__ import annotations

from collections.abc import Iterator

import pytest

from apps.sso import oidc
from tests.sso.idpkit import Idp, running_idp


@pytest.fixture
def idp() -> Iterator[Idp]:
    oidc._discovery_cache.clear()
    with running_idp() as provider:
        yield provider
    oidc._discovery_cache.clear()
