"""Schemathesis fuzzing of a live KCM from its own OpenAPI schema (issue 11, acceptance 2).

One live stack (gunicorn on PostgreSQL and SoftHSM2, its own database) with a tenant `fuzz`
(a key chain, two members and a token for every tenant role), a tenant `decoy` that platform
actions may suspend or terminate, and a platform operator token. For each host (platform and tenant) the
schema is loaded from `/api/schema/` on that host, and every operation gets generated requests
(valid and invalid) as each role of the host and with no token. Every response must be no 5xx
and must conform to the schema: a documented status, content type, headers and body shape.

Known ids (keys, jobs, exports, service-key names) seen in earlier answers are mixed into the
generated path parameters, so that requests reach real objects and not only 404s. Fuzzing
cannot revoke the tokens it uses (a token id in use is swapped for a spare token's) nor touch
the `fuzz` tenant's lifecycle, and operations that disable or destroy run last.

Bounded for CI: KCM_FUZZ_EXAMPLES requests per operation and role (default 16; 3 without a
token, and 3 for a role refused with 401/403 three times in a row), at least MIN_REQUESTS in
all; KCM_FUZZ_SEED makes a run random (default: the same requests each run). The one-line
summary is shown at the end of the pytest run; the answers per operation and role (2xx,
4xx) are printed (pytest -s shows them); KCM_FUZZ_REPORT=<file> also writes every problem
there, KCM_FUZZ_DEBUG=1 prints every 4xx, KCM_FUZZ_ONLY=<regex> fuzzes a subset.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from apps.core.roles import TENANT_ROLES, Role
from tests.e2e.stack import LiveStack
from tests.e2e.tenantkit import Tenant, call, create_chain
from tests.fuzz.conftest import SUMMARY

pytestmark = pytest.mark.e2e

MIN_REQUESTS = 2000
EXAMPLES = int(os.environ.get("KCM_FUZZ_EXAMPLES", "16"))
ANONYMOUS_EXAMPLES = 3
REFUSALS = 3  # a role refused this often (401/403, nothing else) is not asked again
SEED = os.environ.get("KCM_FUZZ_SEED")
ONLY = os.environ.get("KCM_FUZZ_ONLY")  # a regex: fuzz only the operations it finds
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
ANONYMOUS = "anonymous"
# Operations that take something away run after every other one.
DESTRUCTIVE = re.compile(r"disable|deletion|delete|terminate|suspend|revoke|shred|destroy")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

_PROVISION = """
import json
import secrets
from apps.core.roles import TENANT_ROLES, Role
from apps.tenants import services
from apps.tenants.tokens import api_token_create
from apps.tenants.models import Tenant

def mint(tenant, role, name):
    token, raw = api_token_create(
        tenant=tenant, name=name, role=role, created_by_id=None
    )
    return token.pk, raw

platform = Tenant.objects.get(schema_name="public")
fuzz = services.tenant_create(slug="fuzz", name="Fuzz")
services.tenant_create(slug="decoy", name="Decoy")
tokens, in_use, spare = {}, [], []
for host, tenant, roles in (("platform", platform, [Role.PLATFORM_OPERATOR]),
                            ("fuzz", fuzz, list(TENANT_ROLES))):
    for role in roles:
        pk, tokens[host + ":" + role] = mint(tenant, role, "fuzz " + role)
        in_use.append(pk)
    for n in range(4):
        spare.append(mint(tenant, Role.AUDITOR, "spare %d" % n)[0])
for n, roles in enumerate(([Role.AUDITOR], [Role.KEY_ADMIN, Role.AUDITOR])):
    user = services.user_create(username="fuzz-member-%d" % n, password=secrets.token_urlsafe())
    services.membership_set(tenant=fuzz, user=user, roles=roles)
print(json.dumps({"tokens": tokens, "in_use": in_use, "spare": spare}))
"""


@dataclass
class Known:
    """Values seen in answers, offered to path parameters; and which token ids are in use."""

    in_use: set[int]
    spare: list[int]
    # Lists, not sets: the first objects made (the chain) come first.
    uuids: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    ints: list[int] = field(default_factory=list)
    ciphertexts: list[str] = field(default_factory=list)
    turns: Counter[str] = field(default_factory=Counter)

    def learn(self, value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                self.learn(item, name)
        elif isinstance(value, list):
            for item in value[:20]:
                self.learn(item, key)
        elif key == "ciphertext" and isinstance(value, str):
            _add(self.ciphertexts, value)
        elif isinstance(value, str) and UUID.match(value):
            _add(self.uuids, value)
        elif key == "name" and isinstance(value, str) and re.fullmatch(r"[-\w]{1,50}", value):
            _add(self.names, value)
        elif key == "id" and isinstance(value, int) and not isinstance(value, bool):
            _add(self.ints, value)

    def choices(self, parameter: str, fmt: str | None) -> list[Any]:
        if parameter == "token_id":
            return list(self.spare)
        if parameter == "slug":
            return ["decoy"]
        if parameter == "ciphertext":
            return self.ciphertexts[-20:]
        if parameter == "plaintext":
            return ["aGVsbG8gZnV6eg=="]
        if parameter == "version":
            return [1, 2, 3]
        if fmt == "uuid" or (parameter.endswith("_id") and parameter != "membership_id"):
            return self.uuids
        if parameter == "name":
            return self.names
        return self.ints

    def pick(self, operation: str, parameter: str, fmt: str | None) -> Any:
        """Two calls in three, a known value, the oldest and newest first (None: keep the
        generated one)."""
        choices = self.choices(parameter, fmt)
        turn = self.turns[f"{operation} {parameter}"]
        self.turns[f"{operation} {parameter}"] += 1
        if not choices or turn % 3 == 2:
            return None
        n = turn - turn // 3  # 0, 1, 2, ...: the oldest (the chain), the newest, the next...
        return choices[(n // 2 if n % 2 == 0 else -(n // 2 + 1)) % len(choices)]

    def safe(self, parameter: str, value: Any) -> Any:
        """`value`, unless it would revoke a token in use or act on the fuzz tenant itself."""
        if parameter == "token_id" and _as_int(value) in self.in_use:
            self.turns["spare"] += 1
            return self.spare[self.turns["spare"] % len(self.spare)]
        if parameter == "slug" and str(value).strip().lower() == "fuzz":
            return "decoy"
        return value


@dataclass
class Tally:
    requests: int = 0
    server_errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    by_operation: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def refused_for_role(self, label: str) -> bool:
        """Every answer so far, and at least REFUSALS of them, said 401 or 403: the role may
        not call this at all, and more requests would only say it again."""
        counts = self.by_operation[label]
        refused = counts["401"] + counts["403"]
        answered = sum(n for kind, n in counts.items() if kind.endswith("xx") or kind == "error")
        return refused >= REFUSALS and refused == answered

    def summary(self) -> str:
        return (
            f"fuzz: {self.requests:,} requests, {len(self.server_errors)} 5xx, "
            f"{len(self.violations)} schema violations, "
            f"{len(self.transport_errors)} transport errors"
        )

    def coverage(self) -> str:
        lines = []
        for label, counts in sorted(self.by_operation.items()):
            shown = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            lines.append(f"  {label}: {shown}")
        return "\n".join(lines)


def _add(values: list[Any], value: Any) -> None:
    if value not in values:
        values.append(value)


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass
class Fuzz:
    stack: LiveStack
    tokens: dict[str, str]
    known: Known
    session: requests.Session

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.stack.port}"


@pytest.fixture(scope="module")
def fuzz() -> Iterator[Fuzz]:
    with LiveStack(web_workers=2, celery_pool=None) as stack:
        made = json.loads(stack.manage("shell", "-c", _PROVISION).stdout.strip().splitlines()[-1])
        tokens = made["tokens"]
        known = Known(in_use=set(made["in_use"]), spare=made["spare"])
        tenant = Tenant("fuzz", "fuzz.localhost", "", {
            role: tokens[f"fuzz:{role}"] for role in TENANT_ROLES
        })  # fmt: skip
        create_chain(stack, tenant, services=("payments", "ledger"))
        for path in ("/api/v1/keys/", "/api/v1/service-keys/"):
            reply = call(stack, tenant, "key_admin", "GET", path)
            assert reply.status == 200, reply
            known.learn(reply.body)
        with requests.Session() as session:
            yield Fuzz(stack, tokens, known, session)


def _load_schema(fuzz: Fuzz, host: str) -> Any:
    status, _, body = fuzz.stack.request("GET", "/api/schema/?format=json", host=host)
    assert status == 200, (host, status, body[:2000])
    return schemathesis.openapi.from_dict(json.loads(body))


def _operations(schema: Any) -> list[Any]:
    """Creations first (their ids feed later requests), then the rest, with what needs a
    ciphertext after what makes one, and what disables, deletes or terminates last."""
    operations = [result.ok() for result in schema.get_all_operations()]

    def order(operation: Any) -> tuple[int, str]:
        method, path = operation.method.upper(), operation.path
        if method == "DELETE" or DESTRUCTIVE.search(path):
            return (3, operation.label)
        if method == "POST" and ("{" not in path or path.endswith("/rotate/")):
            return (0, operation.label)  # creations (a rotation makes a job)
        return (2 if re.search(r"/(decrypt|rewrap)", path) else 1, operation.label)

    return sorted(operations, key=order)


def _fuzz_operation(
    fuzz: Fuzz, tally: Tally, operation: Any, host: str, role: str, examples: int
) -> None:
    """`examples` requests: valid ones (per the schema) first, then about a third invalid."""
    headers = {"Host": f"{host}:{fuzz.stack.port}"}
    if role != ANONYMOUS:
        slug = "platform" if host == "localhost" else "fuzz"
        headers["Authorization"] = f"Bearer {fuzz.tokens[f'{slug}:{role}']}"
    invalid = examples // 3 if _can_negate(operation) else 0
    for mode, count in (
        (schemathesis.GenerationMode.POSITIVE, examples - invalid),
        (schemathesis.GenerationMode.NEGATIVE, invalid),
    ):
        if count:
            turns = f"{operation.label} {role} {mode.value}"
            strategy = operation.as_strategy(generation_mode=mode)
            _run(fuzz, tally, strategy, count, role, turns, headers)


def _run(
    fuzz: Fuzz,
    tally: Tally,
    strategy: Any,
    count: int,
    role: str,
    turns: str,
    headers: dict[str, str],
) -> None:
    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        derandomize=SEED is None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        if tally.refused_for_role(f"{case.operation.label} [{role}]"):
            return
        for parameter in case.operation.path_parameters:
            name, fmt = parameter.name, parameter.definition.get("schema", {}).get("format")
            if name not in (case.path_parameters or {}):
                continue
            known = fuzz.known.pick(turns, name, fmt)
            if known is not None:
                case.path_parameters[name] = known
            case.path_parameters[name] = fuzz.known.safe(name, case.path_parameters[name])
        body = case.body if isinstance(case.body, dict) else {}
        for name in ("ciphertext", "plaintext"):  # now and then, one that decodes
            if isinstance(body.get(name), str):
                known = fuzz.known.pick(turns, name, None)
                body[name] = body[name] if known is None else known
        _send(fuzz, tally, case, role, headers)

    if SEED is not None:
        run = seed(int(SEED))(run)
    run()


def _can_negate(operation: Any) -> bool:
    return bool(operation.body or operation.query or operation.path_parameters)


def _send(fuzz: Fuzz, tally: Tally, case: Any, role: str, headers: dict[str, str]) -> None:
    label = f"{case.operation.label} [{role}]"
    tally.requests += 1
    try:
        response = case.call(
            base_url=fuzz.base_url, session=fuzz.session, headers=headers, timeout=30
        )
    except requests.RequestException as exc:
        tally.transport_errors.append(f"{label}: {exc!r}")
        tally.by_operation[label]["error"] += 1
        return
    status = response.status_code
    tally.by_operation[label][f"{status // 100}xx"] += 1
    if status in (401, 403):
        tally.by_operation[label][str(status)] += 1
    if os.environ.get("KCM_FUZZ_DEBUG") and status >= 400:
        print(
            "DBG", label, case.path_parameters, repr(case.body)[:150], status, response.text[:160]
        )
    if 200 <= status < 300 and response.content:
        with contextlib.suppress(ValueError):
            fuzz.known.learn(response.json())
    try:
        case.validate_response(response, checks=CHECKS, headers=headers)
    except (FailureGroup, Failure) as exc:
        failures = exc.exceptions if isinstance(exc, FailureGroup) else (exc,)
        titles = "; ".join(sorted({f.title for f in failures}))
        where = f"{label} -> {status}: {titles}\n    {case.as_curl_command(headers=headers)}"
        body = response.text[:300].replace("\n", " ")
        if status >= 500:
            tally.server_errors.append(f"{where}\n    {body}")
        else:
            tally.violations.append(f"{where}\n    {body}")


def _grouped(problems: list[str]) -> list[str]:
    """One line per kind of problem (its first line), with how often it happened."""
    kinds = Counter(problem.split("\n", 1)[0] for problem in problems)
    return [f"{count:4} x {kind}" for kind, count in kinds.most_common(40)]


def test_api_answers_generated_requests_without_5xx_or_schema_violations(fuzz: Fuzz) -> None:
    tally = Tally()
    started = time.monotonic()
    targets = [
        ("localhost", [Role.PLATFORM_OPERATOR, ANONYMOUS]),
        ("fuzz.localhost", [*TENANT_ROLES, ANONYMOUS]),
    ]
    for host, roles in targets:
        schema = _load_schema(fuzz, host)
        for operation in _operations(schema):
            if ONLY and not re.search(ONLY, operation.label):
                continue
            for role in roles:
                examples = ANONYMOUS_EXAMPLES if role == ANONYMOUS else EXAMPLES
                _fuzz_operation(fuzz, tally, operation, host, role, examples)
    seconds = time.monotonic() - started
    summary = f"{tally.summary()} in {seconds:.0f} s"
    SUMMARY.append(summary)
    print(f"\n{summary}\n{tally.coverage()}")
    problems = tally.server_errors + tally.transport_errors + tally.violations
    report = os.environ.get("KCM_FUZZ_REPORT")
    if report:
        with open(report, "w") as out:
            out.write(f"{summary}\n{tally.coverage()}\n\n" + "\n".join(problems) + "\n")
    assert not problems, f"{summary}\n" + "\n".join(_grouped(problems))
    assert ONLY or tally.requests >= MIN_REQUESTS, summary
    # Coverage is real: a good part of the operations answered 2xx to some role (the rest
    # need objects or inputs that random data rarely hits: imports, HYOK links, invitations).
    answered = {label.rsplit(" [", 1)[0] for label, c in tally.by_operation.items() if c["2xx"]}
    operations = {label.rsplit(" [", 1)[0] for label in tally.by_operation}
    assert ONLY or len(answered) >= len(operations) * 0.4, (summary, sorted(operations - answered))
