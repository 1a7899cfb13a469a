"""Platform keys are created at deploy (`kcm_keys init`, part of `kcm_migrate`), once, under a
lock; at run time they are only read, and a missing one is a clear deployment error."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.keystores.models import PlatformKey
from apps.keystores.platform import (
    AUDIT_SIGNING,
    HYOK_CREDENTIALS,
    PURPOSES,
    PlatformKeyMissing,
    forget_platform_keys,
    platform_key,
    platform_keys_init,
)
from apps.keystores.registry import platform_keystore


@pytest.fixture
def no_platform_keys(django_db_blocker: Any) -> Iterator[None]:
    """The platform keys' rows removed (committed: other processes must see it) for the test;
    afterwards the keys it created are destroyed and the deployed ones put back."""
    with django_db_blocker.unblock():
        saved = list(PlatformKey.objects.all())
        PlatformKey.objects.all().delete()
        forget_platform_keys()
        try:
            yield
        finally:
            keystore = platform_keystore()
            for key in PlatformKey.objects.all():
                if key.public_key_der:
                    continue  # signing pairs: left in the token (no destroy for them)
                keystore.destroy(key.handle)
            PlatformKey.objects.all().delete()
            PlatformKey.objects.bulk_create(saved)
            forget_platform_keys()


@pytest.mark.django_db
def test_every_platform_key_exists_after_deploy_and_is_usable() -> None:
    keystore = platform_keystore()
    credentials = platform_key(HYOK_CREDENTIALS)
    blob = keystore.encrypt(credentials.handle, b"pin", b"aad")
    assert keystore.decrypt(credentials.handle, blob, b"aad") == b"pin"
    signing = platform_key(AUDIT_SIGNING)
    assert keystore.public_key_der(signing.handle) == bytes(signing.public_key_der)


def test_a_missing_platform_key_is_an_error_naming_the_command_not_created_on_use(
    no_platform_keys: None,
) -> None:
    with pytest.raises(PlatformKeyMissing) as missing:
        platform_key(HYOK_CREDENTIALS)

    assert "kcm_keys init" in str(missing.value)
    assert not PlatformKey.objects.exists()  # reading never creates
    with pytest.raises(CommandError, match="hyok-credentials"):
        call_command("kcm_keys", "check")


def test_init_creates_each_missing_key_once_and_is_idempotent(no_platform_keys: None) -> None:
    assert sorted(platform_keys_init()) == sorted(p.name for p in PURPOSES)
    handles = dict(PlatformKey.objects.values_list("purpose", "handle"))

    assert platform_keys_init() == []
    assert dict(PlatformKey.objects.values_list("purpose", "handle")) == handles
    call_command("kcm_keys", "check")


def test_two_deploys_at_once_create_each_key_once(no_platform_keys: None) -> None:
    code = textwrap.dedent(
        """
        import django
        django.setup()
        from apps.keystores.platform import platform_keys_init
        print(",".join(platform_keys_init()))
        """
    )
    env_db = {"KCM_DATABASE_URL": _test_database_url()}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=settings.BASE_DIR,
            env={**_environ(), **env_db},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]

    assert all(run.returncode == 0 for run in runs), [err[-2000:] for _, err in outputs]
    created = [name for out, _ in outputs for name in out.strip().split(",") if name]
    assert sorted(created) == sorted(p.name for p in PURPOSES)  # each by one process only
    assert PlatformKey.objects.count() == len(PURPOSES)


def _environ() -> dict[str, str]:
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "kms_project.settings"}


def _test_database_url() -> str:
    """The deployment's database URL, naming the test database instead."""
    url = urlsplit(os.environ["KCM_DATABASE_URL"])
    name = str(settings.DATABASES["default"]["NAME"])
    return urlunsplit((url.scheme, url.netloc, "/" + name, url.query, url.fragment))
