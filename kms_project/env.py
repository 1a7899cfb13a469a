"""Settings helpers: every setting comes from the environment and bad values fail loudly.

A secret ``NAME`` may be given as ``NAME_FILE`` (a path whose content is the value), the
convention of Docker secrets and systemd credentials, so that it never has to sit in the
process environment.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit


class ImproperlyConfiguredEnv(RuntimeError):
    """A setting in the environment is missing or malformed."""


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def env_str(name: str, default: str | None = None) -> str:
    value = _raw(name)
    if value is None:
        if default is None:
            raise ImproperlyConfiguredEnv(f"{name} must be set")
        return default
    return value


def env_optional(name: str) -> str | None:
    return _raw(name)


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfiguredEnv(f"{name} must be a boolean (true/false), got {value!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfiguredEnv(f"{name} must be an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfiguredEnv(f"{name} must be >= {minimum}, got {number}")
    return number


def env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    value = env_str(name, default)
    if value not in choices:
        raise ImproperlyConfiguredEnv(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def env_secret(name: str, default: str | None = None) -> str | None:
    """Read ``NAME`` or the file named by ``NAME_FILE`` (not both)."""
    direct = _raw(name)
    file_name = _raw(f"{name}_FILE")
    if direct is not None and file_name is not None:
        raise ImproperlyConfiguredEnv(f"set only one of {name} and {name}_FILE")
    if file_name is not None:
        path = Path(file_name)
        try:
            content = path.read_text().strip()
        except OSError as exc:
            raise ImproperlyConfiguredEnv(
                f"{name}_FILE points at {file_name!r}, which cannot be read ({exc.strerror})"
            ) from None
        if not content:
            raise ImproperlyConfiguredEnv(f"{name}_FILE points at an empty file")
        return content
    return direct if direct is not None else default


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def database_from_url(url: str, setting: str = "KCM_DATABASE_URL") -> dict[str, object]:
    """Parse ``postgres://user:pass@host:port/name?host=/socket/dir`` into a DATABASES entry
    (`setting`: the variable it came from, for the error messages)."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfiguredEnv(
            f"{setting} must start with postgres:// or postgresql://, got {parts.scheme!r}"
        )
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ImproperlyConfiguredEnv(f"{setting} must name a database")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    host = query.pop("host", None) or unquote(parts.hostname or "")
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfiguredEnv(f"{setting} has an invalid port") from None
    return {
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(port or query.pop("port", "") or ""),
        "OPTIONS": query,
    }


_RATE = re.compile(r"^(off|[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day))$")


def env_rate(name: str, default: str) -> str:
    """A rate limit such as ``100/s`` or ``6000/min`` (``off`` for none)."""
    value = (_raw(name) or default).strip().lower()
    if not _RATE.match(value):
        raise ImproperlyConfiguredEnv(
            f"{name} must look like 100/s, 6000/min or off, got {value!r}"
        )
    return value


def env_networks(name: str, default: list[str]) -> list[str]:
    """A comma-separated list of IP addresses or networks (``10.0.0.0/8``)."""
    entries = env_list(name, default)
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ImproperlyConfiguredEnv(
                f"{name} must list IP addresses or networks, got {entry!r}"
            ) from None
    return entries
