"""Many service keys, data keys made before a rotation, and a check that nothing was lost:
shared by the rotation tests, tools/chaos_rewrap.py and bench/rewrap.py.

The functions that touch the database run inside Django, in the current tenant's schema: in
a test process directly, or in a LiveStack through `in_stack(stack, schema, "<function>", ...)`,
which runs them with `manage.py shell` against the stack's database.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CONTEXT = {"purpose": "rotation"}


def bulk_service_keys(count: int, *, prefix: str = "svc", chunk: int = 2000) -> list[str]:
    """Create `count` service keys under the tenant's only tenant key, wrapped exactly as
    keychain.services does it (the same chain functions), but inserted in bulk: creating a
    hundred thousand keys one request at a time would take the test's whole budget."""
    from apps.keychain import crypto
    from apps.keychain.chain import l2_material, l3_aad_of
    from apps.keychain.models import ServiceKey, ServiceKeyVersion, TenantKey

    l2 = TenantKey.objects.get()
    parent = l2.versions.select_related("key", "parent").get(version=l2.primary_version)
    cipher = l2_material(parent)
    start = ServiceKey.objects.filter(name__startswith=f"{prefix}-").count()
    names = [f"{prefix}-{index:07d}" for index in range(start, start + count)]
    for offset in range(0, count, chunk):
        keys = [ServiceKey(name=name, tenant_key=l2) for name in names[offset : offset + chunk]]
        ServiceKey.objects.bulk_create(keys)
        ServiceKeyVersion.objects.bulk_create(
            ServiceKeyVersion(
                key=key,
                version=1,
                parent=parent,
                wrapped=crypto.seal(
                    cipher,
                    crypto.new_key(),
                    l3_aad_of(
                        key_id=key.pk,
                        version=1,
                        parent_key_id=parent.key_id,
                        parent_version=parent.version,
                    ),
                ),
            )
            for key in keys
        )
    return names


def data_keys(names: list[str]) -> dict[str, dict[str, str]]:
    """One data key per service key: {name: {"ciphertext", "plaintext"}}, made through the
    same path as the API (datakeys.run)."""
    from apps.keychain import datakeys

    made = {}
    for name in names:
        result = datakeys.run(
            service_key=name, operation="generate-data-key", item={"context": CONTEXT}
        )
        made[name] = {"ciphertext": result["ciphertext"], "plaintext": result["plaintext"]}
    return made


def check_data_keys(made: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Decrypt every data key through a cold cache: each service key is unwrapped from the
    database under whatever parent version it has now. Reports failures by code."""
    from apps.core.errors import KcmError
    from apps.keychain import datakeys
    from apps.keychain.cache import key_cache

    key_cache().clear()
    failures: dict[str, int] = {}
    ok = 0
    for name, pair in made.items():
        try:
            result = datakeys.run(
                service_key=name,
                operation="decrypt-data-key",
                item={"ciphertext": pair["ciphertext"], "context": CONTEXT},
            )
        except KcmError as exc:
            failures[exc.code] = failures.get(exc.code, 0) + 1
            continue
        if result["plaintext"] == pair["plaintext"]:
            ok += 1
        else:
            failures["wrong_plaintext"] = failures.get("wrong_plaintext", 0) + 1
    return {"checked": len(made), "ok": ok, "failures": failures}


def chain_census() -> dict[str, Any]:
    """Where every service-key version hangs, and the tenant key's versions with states."""
    from django.db.models import Count

    from apps.keychain.models import ServiceKeyVersion, TenantKey

    l2 = TenantKey.objects.select_related("customer_key").get()
    by_parent = dict(
        ServiceKeyVersion.objects.values_list("parent__version").annotate(n=Count("id"))
    )
    return {
        "l2_id": str(l2.pk),
        "l1_id": str(l2.customer_key_id),
        "l2_primary": l2.primary_version,
        "l2_versions": {v.version: v.state for v in l2.versions.all()},
        "l1_versions": {v.version: v.state for v in l2.customer_key.versions.all()},
        "l3_versions_by_parent": {str(k): v for k, v in by_parent.items()},
        "l3_versions": sum(by_parent.values()),
    }


def l1_versions_in_keystore() -> dict[int, bool]:
    """Whether the platform keystore still holds each version of the tenant's L1."""
    from apps.keychain.models import CustomerKeyVersion
    from apps.keystores.registry import platform_keystore

    return {
        v.version: bool(v.handle) and platform_keystore().exists(v.handle)
        for v in CustomerKeyVersion.objects.order_by("version")
    }


def populate(slugs: list[str], keys: int, folder: str) -> list[str]:
    """For each slug: a tenant with L1 'root' (in the HSM) → L2 → `keys` service keys, and a
    data key per service key saved to <folder>/<schema>.json. Returns the schemas."""
    from django_tenants.utils import tenant_context

    from apps.keychain.services import customer_key_create
    from apps.tenants.services import tenant_create

    schemas = []
    for slug in slugs:
        tenant = tenant_create(slug=slug, name=slug)
        with tenant_context(tenant):
            customer_key_create(name="root")
            made = data_keys(bulk_service_keys(keys))
        Path(folder, f"{tenant.schema_name}.json").write_text(json.dumps(made))
        schemas.append(tenant.schema_name)
    return schemas


def verify(schemas: list[str], folder: str) -> dict[str, Any]:
    """Check every tenant in `schemas` against the data keys `populate` saved: each decrypts
    through the chain as it is now, and every service key hangs under the L2's primary."""
    from django_tenants.utils import tenant_context

    from apps.tenants.models import Tenant

    report: dict[str, Any] = {"checked": 0, "ok": 0, "failures": {}, "misplaced": 0}
    report["l2_versions"] = {}
    for schema in schemas:
        made = json.loads(Path(folder, f"{schema}.json").read_text())
        with tenant_context(Tenant.objects.get(schema_name=schema)):
            census = chain_census()
            checked = check_data_keys(made)
        report["checked"] += checked["checked"]
        report["ok"] += checked["ok"]
        for code, count in checked["failures"].items():
            report["failures"][code] = report["failures"].get(code, 0) + count
        primary = str(census["l2_primary"])
        report["misplaced"] += census["l3_versions"] - census["l3_versions_by_parent"].get(
            primary, 0
        )
        states = ",".join(f"v{v}={s}" for v, s in sorted(census["l2_versions"].items()))
        report["l2_versions"][states] = report["l2_versions"].get(states, 0) + 1
    return report


def platform_token() -> str:
    """A platform operator's API token (the base domain's API)."""
    from apps.core.roles import Role
    from apps.tenants.models import Tenant
    from apps.tenants.tokens import api_token_create

    platform = Tenant.objects.get(schema_name="public")
    return api_token_create(
        tenant=platform, name="rotation", role=Role.PLATFORM_OPERATOR, created_by_id=None
    )[1]


def private_softhsm(folder: Path) -> dict[str, str]:
    """A SoftHSM2 token of its own under `folder`; the environment that selects it."""
    import subprocess

    tokens = folder / "tokens"
    tokens.mkdir(parents=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    # The PIN replaces whatever PIN file the caller's environment names (devstack sets one).
    env = {
        "SOFTHSM2_CONF": str(conf),
        "KCM_PKCS11_TOKEN_LABEL": "kcm",
        "KCM_PKCS11_PIN": "1234",
        "KCM_PKCS11_PIN_FILE": "",
    }
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "kcm", "--pin", "1234",
         "--so-pin", "5678"],
        env={**os.environ, **env}, check=True, capture_output=True,
    )  # fmt: skip
    return env


_IN_STACK = """
import json, sys
from contextlib import nullcontext
from django_tenants.utils import tenant_context
from apps.tenants.models import Tenant
from importlib import import_module
args = json.loads(sys.stdin.read())
module, _, name = args["function"].rpartition(":")
function = getattr(import_module(module or "tests.e2e.rotationkit"), name)
schema = args["schema"]
with tenant_context(Tenant.objects.get(schema_name=schema)) if schema else nullcontext():
    result = function(*args["args"], **args["kwargs"])
print("RESULT " + json.dumps(result))
"""


def in_stack(stack: Any, schema: str | None, function: str, *args: Any, **kwargs: Any) -> Any:
    """Run a function in `schema` of a LiveStack's database (None: the public schema): one of
    this module's by name, or any as "module:function"."""
    import subprocess
    import sys

    from .stack import REPO

    payload = json.dumps({"schema": schema, "function": function, "args": args, "kwargs": kwargs})
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", _IN_STACK],
        cwd=REPO, env=stack.env, input=payload, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(f"{function} failed in the stack:\n{done.stdout}\n{done.stderr}")
    line = next(ln for ln in reversed(done.stdout.splitlines()) if ln.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))
