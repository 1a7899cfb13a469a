"""Fixtures of the key-chain tests: a plain chain; BYOK on either provider; HYOK over KMIP.

test_hyok_pkcs11.py defines its own `customer` and `hyok_api` (a customer's PKCS#11 token
instead of a KMIP server); a module's own fixtures take precedence over these.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apps.core.roles import Role
from apps.keystores.registry import forget_connections, reset_platform_keystore
from tests.helpers import Api
from tests.keychain.byokkit import Byok
from tests.keychain.kmip_server import KmipAdmin, KmipServer
from tests.keychain.kmipkit import Hyok


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


# --- BYOK -----------------------------------------------------------------------------------


@pytest.fixture(params=["pkcs11", "software"])
def provider_kind(request: pytest.FixtureRequest, tmp_path: Path, settings: Any) -> Iterator[str]:
    """Run the test on real SoftHSM2, then on the software provider."""
    settings.KCM_HSM_PROVIDER = request.param
    settings.KCM_SOFTWARE_PROVIDER_FILE = tmp_path / "software-provider.keys"
    reset_platform_keystore()
    yield request.param
    reset_platform_keystore()


@pytest.fixture
def byok_api(api: Any) -> Byok:
    return Byok(api)


# --- HYOK over KMIP: a real `pykmip-server` on loopback -----------------------------------


@pytest.fixture(scope="module")
def kmip_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmipServer]:
    with KmipServer(tmp_path_factory.mktemp("kmip")) as server:
        yield server


@pytest.fixture
def kmip(kmip_server: KmipServer, settings: Any) -> Iterator[KmipServer]:
    """The server, running; connectors and circuit breakers fresh for each test."""
    settings.KCM_HYOK_TIMEOUT_SECONDS = 1
    settings.KCM_HYOK_BREAKER_FAILURES = 2
    settings.KCM_HYOK_BREAKER_RESET_SECONDS = 30
    kmip_server.start()
    forget_connections()
    yield kmip_server
    forget_connections()
    kmip_server.start()


@pytest.fixture
def customer(kmip: KmipServer) -> Iterator[KmipAdmin]:
    with kmip.admin() as admin:
        yield admin


@pytest.fixture
def hyok_api(api: Any, kmip: KmipServer) -> Hyok:
    return Hyok(api, kmip)
