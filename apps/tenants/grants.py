"""Key-use grants: which service keys a `key_user` may use, and under which encryption context.

A grant is stored as JSON on a membership or an API token::

    {"service_keys": ["*"] | ["name", ...], "context": {"key": "value" | null}}

`service_keys` names the service keys (as in `/api/v1/service-keys/<name>/...`) or is `["*"]`
for all of them; `context` lists encryption-context keys every request must carry, with that
exact value, or with any value when null (as AWS KMS grant constraints do). A key user without
a grant may use no key at all. The grant is parsed once, when the principal is loaded from the
row access.py reads anyway, so checking it costs no query.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from apps.core.errors import Forbidden, ValidationFailed
from apps.core.roles import Role
from apps.core.tenancy import Principal
from apps.tenants.models import Membership, Tenant

ALL_KEYS = "*"
MAX_SERVICE_KEYS = 200
MAX_CONTEXT_KEYS = 32
MAX_CONTEXT_TEXT = 1024
_SERVICE_KEY_NAME = re.compile(r"^[-a-zA-Z0-9_]{1,64}$")  # the API's SlugField(max_length=64)


class KeyNotGranted(Forbidden):
    code = "key_not_granted"
    title = "Your key grant does not include this service key"


class ContextNotGranted(Forbidden):
    code = "context_not_granted"
    title = "The encryption context does not meet your key grant's constraints"


@dataclass(frozen=True)
class KeyGrant:
    """A parsed, validated grant. `service_keys` is None for every key; `context` holds the
    constraints as sorted (key, value or None) pairs."""

    service_keys: frozenset[str] | None
    context: tuple[tuple[str, str | None], ...] = ()

    @classmethod
    def parse(cls, raw: object) -> KeyGrant:
        """The grant `raw` (JSON as above); raises ValidationFailed `invalid_grant`."""
        if not isinstance(raw, Mapping) or not set(raw) <= {"service_keys", "context"}:
            raise _invalid("A key grant is an object with `service_keys` and `context`.")
        names = raw.get("service_keys")
        if (
            not isinstance(names, list)
            or not 1 <= len(names) <= MAX_SERVICE_KEYS
            or not all(isinstance(name, str) for name in names)
        ):
            raise _invalid(
                f'`service_keys` lists 1 to {MAX_SERVICE_KEYS} service key names, or is ["*"].'
            )
        if ALL_KEYS in names:
            if len(names) != 1:
                raise _invalid('`service_keys` is either ["*"] or a list of names, not both.')
            keys = None
        else:
            bad = [name for name in names if not _SERVICE_KEY_NAME.match(name)]
            if bad:
                raise _invalid(f"Not a service key name: {bad[0][:64]!r}.")
            keys = frozenset(names)
        context = raw.get("context") or {}
        if not isinstance(context, Mapping) or len(context) > MAX_CONTEXT_KEYS:
            raise _invalid(f"`context` is an object of at most {MAX_CONTEXT_KEYS} constraints.")
        for key, value in context.items():
            if not isinstance(key, str) or not 0 < len(key) <= MAX_CONTEXT_TEXT:
                raise _invalid("A context constraint's key is a non-empty string.")
            if value is not None and (not isinstance(value, str) or len(value) > MAX_CONTEXT_TEXT):
                raise _invalid("A context constraint's value is a string, or null for any.")
        return cls(keys, tuple(sorted(context.items())))

    @classmethod
    def everything(cls) -> KeyGrant:
        return cls(None)

    def to_json(self) -> dict[str, Any]:
        keys = [ALL_KEYS] if self.service_keys is None else sorted(self.service_keys)
        return {"service_keys": keys, "context": dict(self.context)}

    def allows_key(self, name: str) -> bool:
        return self.service_keys is None or name in self.service_keys

    def allows_context(self, context: object) -> bool:
        """Whether an encryption context meets every constraint (None is the empty context)."""
        if not self.context:
            return True
        if context is None:
            return False
        if not isinstance(context, Mapping):
            return False
        for key, value in self.context:
            if key not in context or (value is not None and context[key] != value):
                return False
        return True

    def within(self, other: KeyGrant) -> bool:
        """Whether this grant is at most as broad as `other`: its keys a subset of other's, and
        every constraint of other's also here, at least as strict (a fixed value where other
        fixes that value or accepts any)."""
        if other.service_keys is not None and (
            self.service_keys is None or not self.service_keys <= other.service_keys
        ):
            return False
        mine = dict(self.context)
        for key, value in other.context:
            if key not in mine or (value is not None and mine[key] != value):
                return False
        return True


def _invalid(detail: str) -> ValidationFailed:
    return ValidationFailed(detail, code="invalid_grant")


def grant_load(raw: object) -> KeyGrant | None:
    """A stored grant as the principal carries it; a stored value that no longer parses (it was
    validated when written) grants nothing rather than failing the request."""
    if raw is None:
        return None
    try:
        return KeyGrant.parse(raw)
    except ValidationFailed:
        return None


def grant_of(principal: Principal) -> KeyGrant | None:
    """The principal's own key grant; None if it may use no key (not a key user, or no grant)."""
    grant = principal.key_grant
    if Role.KEY_USER not in principal.roles or not isinstance(grant, KeyGrant):
        return None
    return grant


def key_use_check(*, grant: KeyGrant | None, service_key: str) -> None:
    """Refuse (403 `key_not_granted`) a service key the grant does not list."""
    if grant is None or not grant.allows_key(service_key):
        raise KeyNotGranted(f"Your key grant does not include the service key {service_key!r}.")


def context_use_check(*, grant: KeyGrant | None, context: object) -> None:
    """Refuse (403 `context_not_granted`) a context that misses the grant's constraints. A
    context that is not an object is left to the crypto layer, which refuses it with a 400."""
    if grant is None or not grant.context:
        return
    if context is not None and not isinstance(context, Mapping):
        return
    if not grant.allows_context(context):
        wanted = ", ".join(k if v is None else f"{k}={v}" for k, v in grant.context)
        raise ContextNotGranted(f"Your key grant requires an encryption context with {wanted}.")


def tenant_has_admin(tenant: Tenant) -> bool:
    return Membership.objects.filter(tenant=tenant, roles__contains=[Role.TENANT_ADMIN]).exists()


def grant_check(
    *,
    actor: Principal,
    tenant: Tenant,
    roles: Iterable[str],
    key_grant: KeyGrant | None,
) -> None:
    """Nobody grants what they do not hold: refuse (403) giving any of `roles` the actor does not
    hold (`role_not_held`), or a `key_grant` broader than the actor's own (`grant_exceeds_own`).

    Bootstrap: a platform operator may give any tenant roles, with any grant, in a tenant where
    no member holds tenant_admin yet (the first administrator's invitation)."""
    roles = set(roles)
    if (
        Role.PLATFORM_OPERATOR in actor.roles
        and not tenant.is_platform
        and not tenant_has_admin(tenant)
    ):
        return
    missing = roles - actor.roles
    if missing:
        raise Forbidden(
            f"You cannot grant a role you do not hold: {', '.join(sorted(missing))}.",
            code="role_not_held",
        )
    if key_grant is not None:
        own = grant_of(actor)
        if own is None or not key_grant.within(own):
            raise Forbidden(
                "You cannot grant use of keys or contexts beyond your own key grant.",
                code="grant_exceeds_own",
            )


def grant_for(
    *, roles: Iterable[str], given: KeyGrant | None, actor: Principal | None
) -> KeyGrant | None:
    """The grant a key user gets: the one given, else the actor's own (a trusted caller, or an
    operator bootstrapping a tenant, gives every key). None for anyone not a key user."""
    if Role.KEY_USER not in set(roles):
        if given is not None:
            raise ValidationFailed("Only a key user holds a key grant.", code="invalid_grant")
        return None
    if given is not None:
        return given
    own = grant_of(actor) if actor is not None else None
    return own or KeyGrant.everything()
