from __future__ import annotations

from typing import Any

import pytest

from apps.core.roles import Role
from tests.helpers import Api


@pytest.fixture
def chain(api: Any) -> Any:
    """chain(slug) creates L1 'root' → L2 → L3 'payments' (and 'ledger') in that tenant."""

    def make(slug: str = "acme") -> dict[str, Any]:
        admin: Api = api(slug, Role.KEY_ADMIN)
        l1 = admin.post("/api/v1/customer-keys/", {"name": "root"})
        assert l1.status_code == 201, l1.content
        for name in ("payments", "ledger"):
            l3 = admin.post("/api/v1/service-keys/", {"name": name})
            assert l3.status_code == 201, l3.content
        return {"l1": l1.json_body, "admin": admin, "user": api(slug, Role.KEY_USER)}

    return make
