"""Which owner a customer's PKCS#11 token belongs to: the first owner to use a (library, token
serial) registers it, and nobody else may use it afterwards (see `TokenClaim`), until the owner
gives it up (`token_claims_release`: its key manager removed, or the owner gone)."""

from __future__ import annotations

import os

from django.db import IntegrityError, transaction

from apps.keystores.base import KeystoreRefused
from apps.keystores.models import TokenClaim


class TokenClaimedElsewhere(KeystoreRefused):
    """The token is registered to another owner."""


def token_identity(library: str) -> str:
    """The library as the registry knows it: its real path, so links and aliases match."""
    return os.path.realpath(library)


def token_claim(*, library: str, serial: bytes, owner: str) -> None:
    """Register the token to `owner`, or check that it is theirs already. The refusal names
    neither the other owner nor anything in the token."""
    library, serial_hex = token_identity(library), serial.hex()
    claim = TokenClaim.objects.filter(library=library, serial=serial_hex).first()
    if claim is None:
        try:
            with transaction.atomic():
                claim = TokenClaim.objects.create(library=library, serial=serial_hex, owner=owner)
        except IntegrityError:  # registered at the same moment by someone else
            claim = TokenClaim.objects.get(library=library, serial=serial_hex)
    if claim.owner != owner:
        raise TokenClaimedElsewhere("the token is registered to another tenant")


def token_claims_release(*, owner: str, library: str | None = None) -> int:
    """Give up `owner`'s registrations: of the tokens behind `library`, or all of them. Another
    owner may then register those tokens (with their PINs). Returns how many were released."""
    claims = TokenClaim.objects.filter(owner=owner)
    if library is not None:
        claims = claims.filter(library=token_identity(library))
    released, _ = claims.delete()
    return released
