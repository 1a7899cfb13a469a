"""The data plane's caches across real gunicorn workers: once every worker has cached a token
and its tenant, revoking the token, or suspending the tenant, is refused by every worker on
the very next request (the group commit's check), as Django's path refuses it."""

from __future__ import annotations

import os

import pytest

from .stack import LiveStack
from .tenantkit import (
    KEY_ADMIN,
    KEY_USER,
    Reply,
    Tenant,
    call,
    create_chain,
    on_every_worker,
    provision_tenant,
    service_path,
    web_worker_pids,
)

pytestmark = pytest.mark.e2e

_CHANGE = """
from apps.tenants import services
from apps.tenants.tokens import api_token_revoke
from apps.tenants.models import ApiToken
tenant = services.tenant_get(slug={slug!r})
if {suspend!r}:
    services.tenant_suspend(tenant=tenant, reason="e2e")
else:
    for token in ApiToken.objects.filter(tenant=tenant, role="key_user"):
        api_token_revoke(tenant=tenant, token_id=token.pk)
"""


def _warm(stack: LiveStack, tenant: Tenant) -> list[Reply]:
    path = f"{service_path()}/generate-data-key/"
    return on_every_worker(
        lambda: call(stack, tenant, KEY_USER, "POST", path, {}), web_worker_pids(stack)
    )


@pytest.mark.parametrize("group_commit", ["false", "true"])
def test_revoked_tokens_and_suspended_tenants_are_refused_by_every_warm_worker(
    group_commit: str,
) -> None:
    env = {**os.environ, "KCM_DATAPLANE": "fast", "KCM_AUDIT_GROUP_COMMIT": group_commit}
    with LiveStack(web_workers=2, env=env) as stack:
        tenants = {}
        for slug in ("revoked", "suspended"):
            tenants[slug] = provision_tenant(stack, slug, (KEY_ADMIN, KEY_USER))
            create_chain(stack, tenants[slug])
            assert {reply.status for reply in _warm(stack, tenants[slug])} == {200}
        for slug, suspend in (("revoked", False), ("suspended", True)):
            stack.manage("shell", "-c", _CHANGE.format(slug=slug, suspend=suspend))
        revoked = _warm(stack, tenants["revoked"])
        assert {(r.status, r.body["code"]) for r in revoked} == {(401, "invalid_token")}
        suspended = _warm(stack, tenants["suspended"])
        assert {(r.status, r.body["code"]) for r in suspended} == {(403, "tenant_suspended")}
